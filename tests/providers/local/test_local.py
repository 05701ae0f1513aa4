"""End to end through the local provider: real debugpy ranks, real `dbgfwd attach`, real DAP."""

from __future__ import annotations

import json
import socket
import time
from contextlib import contextmanager

import pytest

from dbgfwd.errors import ExitCode
from dbgfwd.rank import markers
from tests.support import cli
from tests.support.dap import debug_round
from tests.support.procinfo import listening_addrs
from tests.support.ranks import BREAK_LINE, local_ranks, start_rank, wait_for_markers, write_program


@pytest.fixture
def four_ranks(tmp_path, port_block):
    with local_ranks(tmp_path, port_block(4), 4, write_program(tmp_path)) as ranks:
        yield ranks


def test_attach_forwards_every_rank_and_survives_a_restart(tmp_path, four_ranks, port_block):
    ws = tmp_path / "ws"
    ws.mkdir()
    local_base = port_block(4, start=30000)
    bg = cli.Background("attach", "--provider", "local", "--runtime-dir", str(four_ranks["runtime"]),
                        "--base-port", str(four_ranks["base"]), "--local-base-port", str(local_base),
                        "--workspace", str(ws), log=tmp_path / "attach.log")
    try:
        cli.wait_ready(ws, bg=bg)
        ports = cli.launch_ports(ws / ".vscode" / "launch.json")
        assert ports == {r: local_base + r for r in range(4)}

        # Forwards listen on loopback only.
        addrs = listening_addrs(bg.proc.pid)
        assert {p for _, p in addrs} >= set(ports.values())
        assert {ip for ip, _ in addrs} == {"127.0.0.1"}, addrs

        program = str(four_ranks["program"])
        for rank, port in ports.items():
            assert debug_round("127.0.0.1", port, program, BREAK_LINE, "value") == str(rank * 100 + 7)

        # Restart rank 2: the same local port serves the new process.
        old = four_ranks["procs"][2]
        old.stop()
        cli.wait_for(lambda: cli.session(ws)["ranks"][2]["state"] == "waiting", what="rank 2 waiting")
        new = start_rank(four_ranks["program"], 2, 2, four_ranks["runtime"], base_port=four_ranks["base"],
                         world_size=4, extra_env={"DBGFWD_TEST_GENERATION": "2"})
        four_ranks["procs"][2] = new
        wait_for_markers(four_ranks["runtime"], {2}, procs=[new])
        cli.wait_ready(ws, ranks="2", bg=bg)
        assert debug_round("127.0.0.1", ports[2], program, BREAK_LINE, "os.getpid()") == str(new.proc.pid)

        status = cli.run("status", "--json", "--workspace", str(ws))
        assert status.returncode == 0, status.stderr
    finally:
        rc = bg.stop()
    assert rc == 130, bg.output()
    # Every port is freed and the session is gone.
    for port in ports.values():
        with socket.socket() as s:  # a new listener can take it (TIME_WAIT needs SO_REUSEADDR, as always)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen(1)
    assert not (ws / ".dbgfwd" / "session.json").exists()


def test_a_client_connecting_before_its_rank_is_held_until_the_rank_starts(tmp_path, port_block):
    runtime = tmp_path / "run"
    program = write_program(tmp_path)
    base = port_block(1)
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    bg = cli.Background("attach", "--provider", "local", "--runtime-dir", str(runtime), "--ranks", "1",
                        "--base-port", str(base), "--workspace", str(ws), "--client-wait", "60",
                        log=tmp_path / "attach.log")
    rank = None
    try:
        cli.wait_for(lambda: (ws / ".dbgfwd" / "session.json").exists(), what="session", timeout=30)
        local = cli.session(ws)["ranks"][0]["local_port"]
        assert cli.session(ws)["ranks"][0]["state"] == "waiting"
        import threading

        result = {}

        def client():
            result["value"] = debug_round("127.0.0.1", local, str(program), BREAK_LINE, "rank")

        t = threading.Thread(target=client)
        t.start()
        # the debugger is connected, has spoken, and is held while no rank runs: the rank starts only then
        cli.wait_for(lambda: cli.session(ws)["ranks"][0]["state"] == "reconnecting"
                     and cli.session(ws)["ranks"][0]["held"] == 1, what="the debugger held", timeout=30)
        rank = start_rank(program, 0, 0, runtime, base_port=base)
        t.join(90)
        assert result.get("value") == "0"
    finally:
        bg.stop()
        if rank:
            rank.stop()


def test_no_connection_reaches_a_rank_port_without_a_client(tmp_path, port_block):
    """A fake rank (a plain listener with a marker) must see no connection while dbgfwd watches it."""
    runtime = tmp_path / "run"
    base = port_block(1)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", base))
    listener.listen(8)
    listener.setblocking(False)
    markers.write_marker(markers.new_marker(0, 0, base, "127.0.0.1", 1, "test", ["fake"]), runtime)
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    bg = cli.Background("attach", "--provider", "local", "--runtime-dir", str(runtime), "--base-port", str(base),
                        "--workspace", str(ws), log=tmp_path / "attach.log")
    try:
        cli.wait_ready(ws, bg=bg)
        time.sleep(3)  # several monitor/probe cycles
        with pytest.raises(BlockingIOError):
            listener.accept()
        local = cli.session(ws)["ranks"][0]["local_port"]
        with socket.create_connection(("127.0.0.1", local), timeout=10) as client:
            client.sendall(b"hello")
            listener.setblocking(True)
            listener.settimeout(10)
            conn, _ = listener.accept()
            assert conn.recv(5) == b"hello"
            conn.close()
    finally:
        bg.stop()
        listener.close()


def test_plain_debugpy_listener_without_launcher_is_discovered(tmp_path, port_block):
    import subprocess
    import sys

    base = port_block(2)
    code = ("import debugpy, time\ndebugpy.listen(('127.0.0.1', %d))\nprint('up', flush=True)\n"
            "time.sleep(120)\n" % (base + 1))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        res = cli.run("ls", "--provider", "local", "--runtime-dir", str(tmp_path / "none"), "--base-port", str(base),
                      "--json")
        assert res.returncode == 0, res.stderr
        import json

        data = json.loads(res.stdout)
        assert [(r["rank"], r["local_rank"], r["remote_port"]) for r in data["ranks"]] == [(1, 1, base + 1)]
    finally:
        proc.kill()
        proc.wait()


def test_only_the_ranks_of_the_asked_base_port_are_forwarded(tmp_path, port_block):
    """Two projects' ranks share the user's marker folder: --base-port says which job is attached."""
    runtime, program = tmp_path / "run", write_program(tmp_path)
    mine, theirs = port_block(2), port_block(2, start=42000)
    procs = [start_rank(program, r, r, runtime, base_port=mine, world_size=2) for r in range(2)]
    procs.append(start_rank(program, 0, 0, runtime, base_port=theirs, world_size=1))
    try:
        wait_for_markers(runtime, {0, 1}, procs=procs)
        cli.wait_for(lambda: len(markers.read_markers(runtime)) == 3, 60, "three markers")
        res = cli.run("ls", "--provider", "local", "--runtime-dir", str(runtime), "--base-port", str(mine), "--json")
        assert res.returncode == 0, res.stderr
        ports = sorted(r["remote_port"] for r in json.loads(res.stdout)["ranks"])
        assert ports == [mine, mine + 1], res.stdout
        res = cli.run("ls", "--provider", "local", "--runtime-dir", str(runtime), "--base-port", str(mine + 500))
        assert res.returncode == ExitCode.NOT_FOUND
        assert f"base port {mine}, {theirs}" in res.stderr or f"base port {theirs}, {mine}" in res.stderr, res.stderr
    finally:
        for p in procs:
            p.stop()


@contextmanager
def _one_rank_attached(tmp_path, base: int):
    """One real debugpy rank under dbgfwd-rank and `dbgfwd attach` forwarding it: (program, rank, local port)."""
    runtime, program = tmp_path / "run", write_program(tmp_path)
    rank = start_rank(program, 0, 0, runtime, base_port=base, world_size=1)
    ws = tmp_path / "ws"
    ws.mkdir()
    bg = None
    try:
        wait_for_markers(runtime, {0}, procs=[rank])
        bg = cli.Background("attach", "--provider", "local", "--runtime-dir", str(runtime), "--base-port",
                            str(base), "--workspace", str(ws), log=tmp_path / "attach.log")
        cli.wait_ready(ws, bg=bg)
        yield program, rank, cli.launch_ports(ws / ".vscode" / "launch.json")[0]
    finally:
        if bg is not None:
            bg.stop()
        rank.stop()


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
def test_a_debugger_vanishing_with_a_request_in_flight_does_not_kill_the_ranks_debugpy(tmp_path, port_block, reset):
    """debugpy's adapter exits for good when its client is gone while it has an answer to deliver (the
    rank keeps running, its debug port is dead). Through dbgfwd, a debugger that crashes mid-request
    leaves the rank debuggable: the relay detaches for it once its requests are answered, never slams."""
    import struct

    from tests.support.dap import DapClient

    with _one_rank_attached(tmp_path, port_block(1)) as (program, rank, local):
        for _ in range(2):
            client = DapClient("127.0.0.1", local, timeout=30)
            client.attach({str(program): [BREAK_LINE]})
            thread = client.wait_stopped(30)["body"]["threadId"]
            frame = client.top_frame(thread)["id"]
            # A slow evaluate: its answer comes well after the client is gone, after a detach that did
            # not wait for it would have ended the session (the interleaving that kills the adapter).
            client.send_request("evaluate", {"expression": "__import__('time').sleep(1.5) or rank",
                                             "frameId": frame, "context": "repl"})
            time.sleep(0.2)  # on its way to the rank
            if reset:
                client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.sock.close()  # gone, with its answer on the way
            time.sleep(2.0)
            assert rank.proc.poll() is None
            assert debug_round("127.0.0.1", local, str(program), BREAK_LINE, "rank", timeout=30) == "0"


def test_stopping_a_session_never_kills_the_rank(tmp_path, port_block):
    """VS Code's stop (and a compound's stopAll) may ask the adapter to terminate the debuggee, depending on
    what the adapter reports it supports: through dbgfwd a rank of a distributed job is only ever detached
    from, whatever the request says."""
    from tests.support.dap import DapClient

    with _one_rank_attached(tmp_path, port_block(1)) as (program, rank, local):
        for command, arguments in (("disconnect", {"restart": False, "terminateDebuggee": True}), ("terminate", {})):
            client = DapClient("127.0.0.1", local, timeout=30)
            client.attach({str(program): [BREAK_LINE]})
            client.wait_stopped(30)
            assert client.request(command, arguments, timeout=20)["success"]
            client.close()
            time.sleep(1.0)
            assert rank.proc.poll() is None, f"{command} killed the rank"
            assert debug_round("127.0.0.1", local, str(program), BREAK_LINE, "rank", timeout=30) == "0"
