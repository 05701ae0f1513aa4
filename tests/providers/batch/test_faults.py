"""The native SSM client under faults injected by the test agent: loss, duplication, reordering,
websocket failure (resume with a new token), long idle periods at a breakpoint, old agents."""

import hashlib
import os
import socket
import threading
import time

import pytest

from dbgfwd.errors import UpstreamError
from dbgfwd.providers.base import ProviderConfig
from dbgfwd.providers.batch import BatchProvider
from tests.providers.batch.conftest import bridge
from tests.support.dap import DapClient, assert_session_ends
from tests.support.net import close_listener
from tests.support.ranks import BREAK_LINE, start_rank, wait_for_markers, write_program


def echo_server():
    """Echoes every connection, reading all the time whatever the writing back does.

    An echo that stops reading while its write back is blocked closes a cycle no client can break: the agent's
    reader blocks writing to it, so the agent reads neither data nor acks from the client, so its own output
    window never opens, so the echo's write back never completes. The real agent writes to its target the
    same blocking way. Two full runs on 2026-11-30 met that deadlock in the 50 MB test; a debug adapter never
    echoes megabytes while not reading."""
    import queue

    srv = socket.create_server(("127.0.0.1", 0))

    def run():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            backlog: queue.SimpleQueue = queue.SimpleQueue()

            def write_back(c=c, backlog=backlog):
                while (d := backlog.get()):
                    try:
                        c.sendall(d)
                    except OSError:
                        return

            def handle(c=c, backlog=backlog):
                writer = threading.Thread(target=write_back, daemon=True)
                writer.start()
                try:
                    while (d := c.recv(65536)):
                        backlog.put(d)
                except OSError:
                    pass
                backlog.put(b"")
                writer.join(60)
                c.close()
            threading.Thread(target=handle, daemon=True).start()
    threading.Thread(target=run, daemon=True).start()
    return srv


def single_target(world, **options):
    _, ci = world.instance()
    job = world.single_job(ci)
    p = BatchProvider(ProviderConfig(targets=(job,), options=options))
    return p, p.discover().targets[0]


@pytest.mark.timeout(150)
def test_50mb_with_loss_duplication_and_reordering_arrives_intact(world):
    world.agent.drop, world.agent.duplicate, world.agent.reorder = 0.05, 0.02, 0.05
    world.agent.pace = 0  # 50 MB at the real agent's 1 KiB per ms would take a minute; the faults are the point
    srv = echo_server()
    p, target = single_target(world)
    try:
        stream = p.open_stream(target, srv.getsockname()[1], 20)
        size = 50 * 1024 * 1024
        block = os.urandom(1 << 20)
        sent_hash, got_hash, got = hashlib.sha256(), hashlib.sha256(), [0]

        def reader():
            while got[0] < size:
                data = stream.recv(1 << 20)
                if not data:
                    break
                got_hash.update(data)
                got[0] += len(data)
        t = threading.Thread(target=reader)
        t.start()
        for i in range(size // len(block)):
            chunk = block[i % 7:] + block[:i % 7]  # vary the content block to block
            sent_hash.update(chunk)
            stream.sendall(chunk)
        t.join(120)
        assert got[0] == size and got_hash.digest() == sent_hash.digest()
        session = next(iter(p._sessions.values()))
        assert session.channel.retransmits > 0  # loss really happened and was repaired
        stream.close()
    finally:
        p.close()
        close_listener(srv)
    assert world.agent.violations == []


@pytest.fixture
def rank(tmp_path):
    program = write_program(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
    r = start_rank(program, 0, 0, tmp_path / "run", base_port=base)
    wait_for_markers(tmp_path / "run", {0}, procs=[r])
    yield program, base
    r.stop()


def stopped_client(p, target, port, program):
    local, _ = bridge(p, target, port)
    client = DapClient("127.0.0.1", local, timeout=30)
    client.attach({str(program): [BREAK_LINE]})
    stopped = client.wait_stopped(30)
    frame = client.top_frame(stopped["body"]["threadId"])
    return client, frame["id"]


@pytest.mark.timeout(120)
def test_websocket_failure_resumes_with_a_new_token(world, rank):
    program, port = rank
    p, target = single_target(world)
    try:
        client, frame = stopped_client(p, target, port, program)
        assert client.evaluate("rank", frame) == "0"
        world.agent.close_websockets()
        assert client.evaluate("value", frame) == "7"  # same debug session, through the resumed channel
        client.disconnect()
        sess = next(iter(world.agent.sessions.values()))
        assert sess.connections == 2 and len(set(sess.tokens_used)) == 2
        assert len(world.fake.ops("ResumeSession")) >= 1
        assert len(world.fake.ops("StartSession")) == 1  # resumed, not restarted
    finally:
        p.close()
    assert world.agent.violations == []


def idle_world(world, scale=1200.0):
    """The agent's clock runs `scale` times faster: one real second is 20 idle minutes."""
    t0 = time.monotonic()
    world.agent.clock = lambda: t0 + (time.monotonic() - t0) * scale
    world.agent.idle_timeout = 20 * 60  # the SSM default


@pytest.mark.timeout(120)
def test_rank_at_a_breakpoint_survives_30_idle_minutes(world, rank):
    program, port = rank
    idle_world(world)
    p, target = single_target(world)
    p.keepalive_interval = 0.25  # 5 simulated minutes
    try:
        client, frame = stopped_client(p, target, port, program)
        time.sleep(2.0)  # 40 simulated minutes with the debuggee stopped and nothing to say
        assert client.evaluate("rank * 2", frame) == "0"
        client.disconnect()
        sess = next(iter(world.agent.sessions.values()))
        assert not sess.idle_closed and sess.nops > 0
    finally:
        p.close()
    assert world.agent.violations == []


@pytest.mark.timeout(120)
def test_without_keepalive_the_idle_session_is_closed(world, rank):
    """Control for the test above: the agent's idle timer really fires."""
    program, port = rank
    idle_world(world)
    p, target = single_target(world)
    p.keepalive_interval = 3600
    try:
        client, frame = stopped_client(p, target, port, program)
        time.sleep(2.0)
        sess = next(iter(world.agent.sessions.values()))
        assert sess.idle_closed
        assert_session_ends(client)
        client.close()
    finally:
        p.close()


def test_old_agent_without_multiplexing_is_refused_clearly(world):
    world.agent.agent_version = "2.3.1319.0"
    p, target = single_target(world)
    try:
        with pytest.raises(UpstreamError, match="cannot multiplex.*3.0.196.0") as err:
            p.open_stream(target, 5678, 10)
        assert not err.value.retryable
    finally:
        p.close()
    assert world.fake.ops("TerminateSession")  # the half-opened session was ended


def test_agent_closing_the_channel_ends_streams_and_the_next_client_gets_a_new_session(world):
    srv = echo_server()
    p, target = single_target(world)
    try:
        port = srv.getsockname()[1]
        s1 = p.open_stream(target, port, 10)
        s1.sendall(b"ping")
        assert s1.recv(4) == b"ping"
        sid = next(iter(world.agent.sessions))
        world.agent.end_session(sid, "terminated by an administrator")
        s1.settimeout(10)
        assert s1.recv(10) == b""  # the engine sees EOF
        s2 = p.open_stream(target, port, 10)
        s2.sendall(b"again")
        assert s2.recv(5) == b"again"
        assert len(world.fake.ops("StartSession")) == 2
    finally:
        p.close()
        close_listener(srv)
    assert world.agent.violations == []
