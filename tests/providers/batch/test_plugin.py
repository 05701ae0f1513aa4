"""`--ssm-backend plugin` with the real session-manager-plugin (built from AWS's source, in ../shared/tools),
against the project's SSM test agent: the process contract, the token, the port, long silences, resume, loss,
and a clean stop."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

from dbgfwd.errors import ProviderUnavailable
from dbgfwd.providers.base import ProviderConfig
from dbgfwd.providers.batch import BatchProvider
from tests.support import cli, require
from tests.providers.batch.test_faults import echo_server

ROOT = Path(__file__).resolve().parents[3]
REAL_PLUGIN = ROOT.parent / "shared" / "tools" / "session-manager-plugin" / "session-manager-plugin"


@pytest.fixture
def plugin(monkeypatch):
    if not os.access(REAL_PLUGIN, os.X_OK):
        require.missing(f"the real session-manager-plugin is not at {REAL_PLUGIN}")
    monkeypatch.setenv("DBGFWD_SSM_PLUGIN", str(REAL_PLUGIN))
    return REAL_PLUGIN


@pytest.fixture
def plugin_world(world, plugin):
    # The real plugin (1.2.0.0) now and then sends two different messages under one sequence number: its
    # SendInputDataMessage reads and bumps DataChannel.StreamDataSequenceNumber without a lock, from whichever
    # goroutine sends (stream data from the mux, the terminate-session flag from its signal handler, ...). The
    # real agent keys on the number and drops the second as a duplicate; so does the test agent, which records
    # it. Tolerated for the plugin only: BatchWorld fails any test where dbgfwd's own client does it.
    world.tolerate_seq_reuse = True
    return world


def _provider(world):
    _, ci = world.instance()
    job = world.single_job(ci)
    p = BatchProvider(ProviderConfig(targets=(job,), options={"ssm_backend": "plugin"}))
    return p, p.discover().targets[0]


def _echo_round(stream, data: bytes) -> bytes:
    stream.sendall(data)
    got = b""
    while len(got) < len(data) and (chunk := stream.recv(65536)):
        got += chunk
    return got


def _mux_sockets() -> set[str]:
    return set(glob.glob("/tmp/*_session_manager_plugin_mux.sock"))


def test_missing_plugin_is_one_clear_line(monkeypatch):
    monkeypatch.delenv("DBGFWD_SSM_PLUGIN", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ProviderUnavailable, match="session-manager-plugin is not installed"):
        BatchProvider(ProviderConfig(targets=("00000000-1111-2222-3333-444444444444",),
                                     options={"ssm_backend": "plugin"}))


@pytest.mark.timeout(120)
def test_real_plugin_carries_streams_keeps_the_token_out_of_ps_and_stops_cleanly(plugin_world):
    before = _mux_sockets()
    srv = echo_server()
    p, target = _provider(plugin_world)
    try:
        for n in range(2):  # two connections, one plugin process / SSM session
            s = p.open_stream(target, srv.getsockname()[1], 30)
            assert s.gettimeout() is None  # connect was bounded; a silent debugger is not
            assert _echo_round(s, f"through the real plugin {n}".encode()) == f"through the real plugin {n}".encode()
            session = next(iter(p._sessions.values()))
            agent_session = plugin_world.agent.sessions[session.session_id]
            assert agent_session.dialed == n + 1  # each connection is a stream of its own at the agent
            s.close()
        assert len(plugin_world.fake.ops("StartSession")) == 1
        session = next(iter(p._sessions.values()))
        assert any(f"Port {session.local_port} opened" in line for line in session._output)  # its port
        token = plugin_world.agent.sessions[session.session_id].tokens_used[0]
        cmdline = Path(f"/proc/{session.proc.pid}/cmdline").read_bytes()
        assert token.encode() not in cmdline and b"TokenValue" not in cmdline  # `ps` shows no token
        proc, sid = session.proc, session.session_id
    finally:
        p.close()
        srv.close()
    assert proc.poll() is not None
    agent_session = plugin_world.agent.sessions[sid]
    assert agent_session.closed  # the plugin sent the terminate-session flag on SIGINT
    assert _mux_sockets() <= before  # and removed its mux socket
    assert plugin_world.agent.violations == []


@pytest.mark.timeout(120)
def test_the_plugin_resumes_after_a_websocket_drop(plugin_world):
    srv = echo_server()
    p, target = _provider(plugin_world)
    try:
        s = p.open_stream(target, srv.getsockname()[1], 30)
        assert _echo_round(s, b"before") == b"before"
        sess = next(iter(plugin_world.agent.sessions.values()))
        plugin_world.agent.close_websockets()  # the plugin calls ResumeSession and reopens the stream URL
        # Sent once the plugin is back: what a client sends WHILE it reconnects is lost for good (its upload loop
        # ends on the failed write and the message never reaches its resend buffer; README, "AWS Batch").
        cli.wait_for(lambda: sess.connections == 2, what="the plugin's new websocket", timeout=60)
        assert _echo_round(s, b"after the drop") == b"after the drop"
        assert plugin_world.fake.ops("ResumeSession")
        s.close()
    finally:
        p.close()
        srv.close()
    assert plugin_world.agent.violations == []


@pytest.mark.timeout(120)
def test_the_plugin_carries_data_intact_through_loss(plugin_world):
    import threading

    srv = echo_server()
    p, target = _provider(plugin_world)
    try:
        s = p.open_stream(target, srv.getsockname()[1], 30)
        plugin_world.agent.drop = 0.02  # of the agent's messages and acks
        block = os.urandom(64 * 1024)
        got = bytearray()

        def read():
            while len(got) < len(block) and (chunk := s.recv(65536)):
                got.extend(chunk)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        s.sendall(block)
        reader.join(60)
        assert bytes(got) == block
        s.close()
    finally:
        p.close()
        srv.close()
    assert plugin_world.agent.violations == []


@pytest.mark.timeout(180)
def test_attach_through_the_real_plugin_debugs_a_rank_held_at_a_breakpoint(plugin_world, tmp_path, port_block):
    """`dbgfwd attach --ssm-backend plugin` end to end with a real debugpy rank: stop at a breakpoint, hold it
    silent for 12 s (longer than the plugin's old 10 s stream timeout), then evaluate and go on."""
    import time

    from tests.support.dap import DapClient
    from tests.support.ranks import BREAK_LINE, start_rank, wait_for_markers, write_program

    _, ci = plugin_world.instance()
    job = plugin_world.single_job(ci)
    base = port_block(1)
    program = write_program(tmp_path)
    rank = start_rank(program, 0, 0, tmp_path / "run", base_port=base, world_size=1)
    bg = None
    try:
        wait_for_markers(tmp_path / "run", {0}, procs=[rank])
        bg = cli.Background("attach", "--provider", "batch", job, "--ssm-backend", "plugin", "--ranks-per-node",
                            "1", "--base-port", str(base), "--workspace", str(tmp_path), log=tmp_path / "attach.log",
                            env={**plugin_world.env(), "DBGFWD_SSM_PLUGIN": str(REAL_PLUGIN)})
        cli.wait_ready(tmp_path, timeout=60, bg=bg)
        (port,) = cli.launch_ports(tmp_path / ".vscode" / "launch.json").values()
        client = DapClient("127.0.0.1", port, timeout=60)
        client.attach({str(program): [BREAK_LINE]})
        thread_id = client.wait_stopped(60)["body"]["threadId"]
        frame = client.top_frame(thread_id)
        time.sleep(12)  # a debugger looking at a paused rank: nothing crosses the session
        assert client.evaluate("value", frame["id"]) == "7"
        client.request("setBreakpoints", {"source": {"path": str(program)}, "breakpoints": []})
        client.continue_(thread_id)
        client.disconnect()
    finally:
        if bg is not None:
            assert bg.stop() == 130, bg.output()[-3000:]
        rank.stop()
    assert plugin_world.agent.violations == []


def test_native_backend_sends_the_terminate_flag_too(world):
    srv = echo_server()
    _, ci = world.instance()
    p = BatchProvider(ProviderConfig(targets=(world.single_job(ci),)))
    try:
        target = p.discover().targets[0]
        s = p.open_stream(target, srv.getsockname()[1], 30)
        assert _echo_round(s, b"native") == b"native"
        s.close()
        (sid,) = list(world.agent.sessions)
    finally:
        p.close()
        srv.close()
    assert world.agent.sessions[sid].end_reason == "TerminateSession flag"
