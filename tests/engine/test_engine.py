"""The engine in-process, with a small provider over real loopback sockets."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace

import pytest

from dbgfwd.engine import Engine, EngineSettings, PlanSettings, RankState
from dbgfwd.engine.serving import backoff_delays
from dbgfwd.errors import NotFoundError, UpstreamError
from dbgfwd.plan.layout import slots_for
from dbgfwd.providers.base import Discovery, RankInfo, Target
from dbgfwd.providers.scripted import ScriptedProvider
from tests.support.net import close_listener


class EchoServer:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self):
        close_listener(self.sock)


def _engine(provider, **kw):
    settings = EngineSettings(poll_interval=0.1, rediscover_interval=0.1, backoff_initial=0.01, backoff_max=0.05,
                              client_wait=kw.pop("client_wait", 5.0), probe_timeout=kw.pop("probe_timeout", 30.0))
    from tests.conftest import free_port_block

    local_base = free_port_block(4, start=40000)
    return Engine(provider, PlanSettings(base_port=1, local_base_port=local_base, **kw), settings)


def _state(engine, rank=0):
    return {s.planned.rank: s for s in engine.snapshot()}[rank]


def _wait(pred, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_retryable_failures_then_success_relays_bytes():
    echo = EchoServer()
    t = Target(key="a", name="a", ranks=(RankInfo(0, 0, echo.port),))
    prov = ScriptedProvider([t], fail=lambda n: UpstreamError("not yet") if n < 4 else None)
    prov.ready_ports = {echo.port}
    eng = _engine(prov)
    eng.start()
    try:
        local = _state(eng).planned.local_port
        assert _wait(lambda: _state(eng).state == RankState.READY)
        with socket.create_connection(("127.0.0.1", local), timeout=5) as c:
            c.sendall(b"x" * 100000)
            got = b""
            while len(got) < 100000:
                got += c.recv(65536)
            assert got == b"x" * 100000
            assert _state(eng).state == RankState.CONNECTED
        assert prov.attempts == 4
        assert _wait(lambda: _state(eng).state == RankState.READY)
        s = _state(eng)
        assert (s.connections, s.failures, s.bytes_up, s.bytes_down) == (1, 3, 100000, 100000)
    finally:
        eng.stop()
        echo.close()


HELLO = b"Content-Length: 2\r\n\r\n{}"  # what a debugger sends as soon as it connects


def _closed_on_us(c) -> bool:
    """The forward closed the connection (a reset when our request was still unread)."""
    try:
        return c.recv(10) == b""
    except ConnectionResetError:
        return True


def test_non_retryable_failure_marks_rank_failed_with_reason():
    echo = EchoServer()
    t = Target(key="a", name="a", ranks=(RankInfo(0, 0, echo.port),))
    prov = ScriptedProvider([t], fail=lambda n: UpstreamError("forbidden: needs create pods/portforward",
                                                                retryable=False))
    eng = _engine(prov)
    eng.start()
    try:
        with socket.create_connection(("127.0.0.1", _state(eng).planned.local_port), timeout=5) as c:
            c.settimeout(5)
            c.sendall(HELLO)  # a debugger speaks first; then the upstream is tried
            assert _closed_on_us(c)
        s = _state(eng)
        assert s.state == RankState.FAILED and "pods/portforward" in s.reason
        assert prov.attempts == 1
    finally:
        eng.stop()
        echo.close()


def test_client_gives_up_after_client_wait_and_listener_stays():
    t = Target(key="a", name="a", running=False, status="Pending", ranks=(RankInfo(0, 0, 1),))
    prov = ScriptedProvider([t])
    eng = _engine(prov, client_wait=0.5)
    eng.start()
    try:
        local = _state(eng).planned.local_port
        for _ in range(2):  # the listener is still there the second time
            with socket.create_connection(("127.0.0.1", local), timeout=5) as c:
                c.settimeout(5)
                c.sendall(HELLO)
                assert _closed_on_us(c)
        assert prov.attempts == 0
        assert "Pending" in _state(eng).reason
    finally:
        eng.stop()


def test_replaced_target_is_followed_on_the_same_local_port():
    a, b = EchoServer(), EchoServer()
    prov = ScriptedProvider([Target(key="slot0", name="pod-a", ranks=(RankInfo(0, 0, a.port),))])
    eng = _engine(prov)
    eng.start()
    try:
        local = _state(eng).planned.local_port
        prov.targets = [Target(key="slot0", name="pod-b", ranks=(RankInfo(0, 0, b.port),))]
        assert _wait(lambda: _state(eng).target_name == "pod-b")
        with socket.create_connection(("127.0.0.1", local), timeout=5) as c:
            c.sendall(b"hi")
            assert c.recv(2) == b"hi"
        assert (a.accepted, b.accepted) == (0, 1)
        assert _state(eng).planned.local_port == local
    finally:
        eng.stop()
        a.close()
        b.close()


def test_nothing_found_is_not_found_error():
    with pytest.raises(NotFoundError, match="in the script"):
        _engine(ScriptedProvider([])).start()


def test_slots_from_rank_base_and_ranks_per_node():
    ts = [Target(key="w1", name="worker-1", node_index=2, rank_base=4),
          Target(key="m", name="master-0", node_index=0, rank_base=0),
          Target(key="k", name="known", node_index=5, ranks=(RankInfo(10, 0, 7000),))]
    got = [(s.rank, s.node, s.local_rank, s.remote_port) for s, _ in slots_for(ts, 5678, 2)]
    assert got == [(0, "master-0", 0, 5678), (1, "master-0", 1, 5679), (4, "worker-1", 0, 5678),
                   (5, "worker-1", 1, 5679), (10, "known", 0, 7000)]
    assert slots_for([Target(key="x", name="x")], 5678, None) == []


def test_backoff_is_capped_and_jittered():
    delays = backoff_delays(0.1, 1.0)
    values = [next(delays) for _ in range(20)]
    assert all(0.05 <= v <= 1.0 for v in values)
    assert max(values[10:]) <= 1.0 and min(values[10:]) >= 0.5


def test_relay_closes_when_upstream_never_answers_a_half_close():
    from dbgfwd.net.relay import Relay

    a, b = socket.socketpair()  # client side
    c, d = socket.socketpair()  # upstream side; d is "the rank" and never closes
    relay = Relay(b, c, linger=0.3)
    t = threading.Thread(target=relay.run, daemon=True)
    t.start()
    a.sendall(b"bye")
    a.shutdown(socket.SHUT_WR)
    assert d.recv(3) == b"bye"
    t.join(5)
    assert not t.is_alive() and relay.closed
    for s in (a, d):
        s.close()


def test_a_failing_rediscovery_is_logged_once_and_shown_on_ranks(caplog):
    import logging

    from dbgfwd.errors import AuthError

    t = Target(key="a", name="a", ranks=(RankInfo(0, 0, 1),))
    prov = ScriptedProvider([t])
    eng = _engine(prov)
    eng.start()
    try:
        calls = []

        def expired():
            calls.append(1)
            raise AuthError("token has expired")

        prov.discover = expired
        with caplog.at_level(logging.WARNING, logger="dbgfwd.engine"):
            assert _wait(lambda: _state(eng).reason == "token has expired")
            assert _wait(lambda: len(calls) >= 4), "rediscovery did not run again"
        assert [r.getMessage() for r in caplog.records].count("token has expired") == 1
        prov.discover = lambda: Discovery((t,), where="in the test")
        assert _wait(lambda: any("works again" in r.getMessage() for r in caplog.records))
    finally:
        eng.stop()


def test_a_hung_probe_does_not_stall_rediscovery():
    release = threading.Event()
    t = Target(key="a", name="a", ranks=(RankInfo(0, 0, 1),))
    prov = ScriptedProvider([t])
    prov.probe = lambda target: release.wait(30) and None  # a provider whose probe never returns
    eng = _engine(prov, probe_timeout=0.3)
    try:
        eng.start()
        prov.targets = [t, Target(key="b", name="b", ranks=(RankInfo(1, 0, 2),))]
        assert _wait(lambda: len(eng.snapshot()) == 2), "rediscovery stalled behind the hung probe"
        assert _state(eng, 1).state == RankState.WAITING
    finally:
        release.set()
        eng.stop()


def test_an_unreachable_target_says_why_and_since_when_and_keeps_its_source_root():
    """A host outage: every rank on it says so (no client waiting), and the rank's last known source root
    stays (launch.json keeps its pathMappings), until the host is back."""
    up = Target(key="h", name="h1", ranks=(RankInfo(0, 0, 1),), remote_root="/workspace")
    prov = ScriptedProvider([up])
    eng = _engine(prov)
    eng.start()
    try:
        assert _state(eng).remote_root == "/workspace"
        prov.targets = [replace(up, running=False, status="ssh: h1 is unreachable (timed out)", remote_root=None)]
        assert _wait(lambda: "since" in _state(eng).reason)
        s = _state(eng)
        assert s.reason.startswith("h1: ssh: h1 is unreachable (timed out) (since ") and "keeps trying" in s.reason
        assert s.remote_root == "/workspace"
        prov.targets = [up]
        assert _wait(lambda: _state(eng).reason == "")
    finally:
        eng.stop()


def test_a_discovery_outage_is_logged_once_and_its_end_once(caplog):
    from dbgfwd.errors import UnreachableError

    class Flaky(ScriptedProvider):
        down = False

        def discover(self):
            if self.down:
                raise UnreachableError("the API server does not answer")
            return super().discover()

    prov = Flaky([Target(key="a", name="a", ranks=(RankInfo(0, 0, 1),))])
    from tests.conftest import free_port_block

    # Probes every 0.05 s, discovery every 0.3 s: most monitor passes do not run discovery.
    settings = EngineSettings(poll_interval=0.05, hot_poll_interval=0.05, rediscover_interval=0.3,
                              rediscover_max=0.3, backoff_initial=0.01, backoff_max=0.05)
    eng = Engine(prov, PlanSettings(base_port=1, local_base_port=free_port_block(1, start=40000)), settings)
    eng.start()
    try:
        with caplog.at_level("WARNING", logger="dbgfwd"):
            prov.down = True
            assert _wait(lambda: "does not answer" in _state(eng).reason)
            time.sleep(1.0)  # many monitor passes (probes run) while discovery keeps failing
            prov.down = False
            assert _wait(lambda: "works again" in caplog.text)
            time.sleep(0.5)
        lines = [r.getMessage() for r in caplog.records]
        assert sum("does not answer" in m for m in lines) == 1, lines
        assert sum("works again" in m for m in lines) == 1, lines
    finally:
        eng.stop()


def test_a_ranks_own_working_directory_beats_its_targets_and_disagreement_is_said(caplog):
    """A container's workingDir is where the image starts, not where the user ran torchrun: the rank's
    marker says where it really runs, and launch.json follows it."""
    from dbgfwd.rank.markers import Marker, ProbeResult

    class WithMarkers(ScriptedProvider):
        def probe(self, target):
            return ProbeResult(markers=(
                Marker(rank=0, local_rank=0, port=1, pid=1, cwd="/workspace", argv=("train.py", "--lr", "1")),
                Marker(rank=1, local_rank=1, port=2, pid=2, cwd="/scratch/run7", argv=("train.py",))))

    prov = WithMarkers([Target(key="p", name="pod-0", ranks=(RankInfo(0, 0, 1), RankInfo(1, 1, 2)),
                               remote_root="/opt/app-root/src")])
    plans = []
    settings = EngineSettings(poll_interval=0.05, rediscover_interval=0.1, backoff_initial=0.01, backoff_max=0.05)
    from tests.conftest import free_port_block

    eng = Engine(prov, PlanSettings(base_port=1, local_base_port=free_port_block(2, start=40000)), settings,
                 on_plan_change=plans.append)
    with caplog.at_level("WARNING", logger="dbgfwd"):
        eng.start()
        try:
            assert _wait(lambda: _state(eng, 1).remote_root == "/scratch/run7")
            assert (_state(eng, 0).remote_root, _state(eng, 0).program) == ("/workspace", "train.py")
            assert any({r.planned.rank: r.remote_root for r in p} == {0: "/workspace", 1: "/scratch/run7"}
                       for p in plans)  # launch.json was told
            time.sleep(0.3)
        finally:
            eng.stop()
    said = [r.getMessage() for r in caplog.records if "different folders" in r.getMessage()]
    assert len(said) == 1 and "pod-0" in said[0] and "/scratch/run7" in said[0], said


@pytest.mark.parametrize("who", ["client", "upstream"])
def test_a_half_close_reaches_the_other_side_at_once_and_the_other_direction_still_flows(who):
    """Not DAP: the side that finished writing is seen finishing (end of file) by the other side right away,
    well before the relay's linger, and the other direction keeps carrying bytes until it finishes too."""
    from dbgfwd.net.relay import Relay

    a, b = socket.socketpair()  # a: the client
    c, d = socket.socketpair()  # d: the rank
    relay = Relay(b, c, linger=30)
    t = threading.Thread(target=relay.run, daemon=True)
    t.start()
    closer, reader = (a, d) if who == "client" else (d, a)
    for s in (a, d):
        s.settimeout(5)
    closer.sendall(b"last words")
    closer.shutdown(socket.SHUT_WR)
    got = b""
    while (chunk := reader.recv(64)):
        got += chunk
    assert got == b"last words"  # and then end of file, long before the 30 s linger
    reader.sendall(b"an answer")
    assert closer.recv(64) == b"an answer"
    reader.close()
    assert closer.recv(64) == b""
    t.join(5)
    assert not t.is_alive() and relay.closed
    closer.close()


def test_ranks_revealed_by_a_probe_are_ready_from_that_same_probe():
    """Pods without a known layout (no --ranks-per-pod): the first probe's markers reveal the ranks. That probe
    also shows them listening, so they are ready when start() returns, not a round of probes later (at 128 pods
    a round took seconds, and 1024 ranks sat 'waiting' that long)."""
    from dbgfwd.rank.markers import Marker, ProbeResult

    probes = []

    class LayoutFromMarkers(ScriptedProvider):
        def probe(self, target):
            probes.append(target.key)
            return ProbeResult(markers=(Marker(rank=0, local_rank=0, port=1, pid=1),
                                        Marker(rank=1, local_rank=1, port=2, pid=2)),
                               listening=frozenset({("127.0.0.1", 1), ("127.0.0.1", 2)}), tcp_known=True)

    from tests.conftest import free_port_block

    prov = LayoutFromMarkers([Target(key="p", name="pod-0")])
    eng = Engine(prov, PlanSettings(base_port=1, local_base_port=free_port_block(2, start=40000)),
                 EngineSettings(poll_interval=60, settled_poll_interval=60, rediscover_interval=60))
    eng.start()
    try:
        assert probes == ["p"]
        assert {r.planned.rank: r.state for r in eng.snapshot()} == {0: RankState.READY, 1: RankState.READY}
    finally:
        eng.stop()


def test_settled_probes_drift_apart_while_nothing_changes_and_snap_back_on_a_change():
    """Probing 128 pods every 5 s cost an idle attach 13 % of a core. A provider with costly probes (Kubernetes:
    an exec per pod) lets the engine double a settled target's interval while the probe finds the same thing,
    up to its settled_probe_max; a different finding (a rank restarted, a listener gone) sets it back."""
    from dbgfwd.engine.readiness import Readiness
    from dbgfwd.rank.markers import Marker, ProbeResult

    class Costly(ScriptedProvider):
        settled_probe_max = 40.0

    same = ProbeResult(markers=(Marker(rank=0, local_rank=0, port=1, pid=10),),
                       listening=frozenset({("127.0.0.1", 1)}), tcp_known=True)
    restarted = replace(same, markers=(Marker(rank=0, local_rank=0, port=1, pid=11),))
    ready = Readiness(table=None, provider=Costly([]), settings=EngineSettings(settled_poll_interval=5.0),
                      planning=None)
    seen = []
    for res in (same, same, same, same, same, same, restarted, same, None, same):
        ready._pace("pod", res)
        seen.append(ready._settled_every["pod"])
    assert seen == [5.0, 10.0, 20.0, 40.0, 40.0, 40.0, 5.0, 5.0, 5.0, 5.0]
    cheap = Readiness(table=None, provider=ScriptedProvider([]), settings=EngineSettings(settled_poll_interval=5.0),
                      planning=None)
    for _ in range(4):
        cheap._pace("host", same)
    assert cheap._settled_every["host"] == 5.0  # the default: no drift


def test_settled_probes_of_targets_that_settled_together_are_spread_out():
    """The pods of a job become ready together; with identical intervals their settled probes stayed together, a
    burst of 128 execs once a minute. Each target's interval is stretched by its own factor in [0.75, 1.25)."""
    from types import SimpleNamespace

    from dbgfwd.engine.readiness import Readiness, spread

    factors = [spread(f"scale/train-worker-{i}") for i in range(128)]
    assert all(0.75 <= f < 1.25 for f in factors)
    assert max(factors) - min(factors) > 0.4 and len(set(factors)) > 100
    assert spread("scale/train-worker-7") == factors[7]  # a target keeps its own pace

    targets = {f"pod-{i}": Target(key=f"pod-{i}", name=f"pod-{i}", ranks=(i,)) for i in range(128)}
    entries = {i: SimpleNamespace(target=targets[f"pod-{i}"], ready=True, retrying=False) for i in range(128)}
    table = SimpleNamespace(lock=threading.Lock(), targets=targets, ranks=entries)
    ready = Readiness(table=table, provider=ScriptedProvider([]), settings=EngineSettings(settled_poll_interval=60),
                      planning=None)
    now = time.monotonic()
    for key in targets:
        ready._settled_every[key] = 60.0
        ready._last_probe[key] = now - 60.0  # every target was probed at the same moment, a minute ago
    due = {t.key for t in ready._due(force=False)}
    # due now: those whose stretched minute is over (0.6 s either side for the time this test itself takes)
    assert {k for k in targets if spread(k) <= 0.99} <= due <= {k for k in targets if spread(k) <= 1.01}
    assert 20 < len(due) < 108
    ready.close()


def test_a_settled_target_whose_ranks_came_from_markers_is_not_probed_as_if_starting():
    """Pods whose layout comes from markers carry no ranks of their own (Target.ranks is empty at every
    rediscovery): once their ranks are planned and ready they are settled, not 'ranks still unknown' (which
    probed 128 pods every second)."""
    from dbgfwd.rank.markers import Marker, ProbeResult

    class LayoutFromMarkers(ScriptedProvider):
        def probe(self, target):
            return ProbeResult(markers=(Marker(rank=0, local_rank=0, port=1, pid=1),),
                               listening=frozenset({("127.0.0.1", 1)}), tcp_known=True)

    from tests.conftest import free_port_block

    eng = Engine(LayoutFromMarkers([Target(key="p", name="pod-0")]),
                 PlanSettings(base_port=1, local_base_port=free_port_block(1, start=40000)),
                 EngineSettings(poll_interval=0.0, settled_poll_interval=60, rediscover_interval=60))
    eng.start()
    try:
        assert [r.state for r in eng.snapshot()] == [RankState.READY]
        assert eng._readiness._due(force=False) == []
    finally:
        eng.stop()


def test_probes_that_find_the_markers_they_found_before_do_not_replan():
    """Markers can reveal ranks not planned yet, so a probe that brings new ones folds them into the plan at
    once. Settled probes that find the same thing must not: comparing every target and marker of 1024 ranks was a
    third of a settled attach's CPU once probes ran a few at a time."""
    from dbgfwd.rank.markers import Marker, ProbeResult
    from tests.conftest import free_port_block

    pid = [1]

    class Markers(ScriptedProvider):
        def probe(self, target):
            return ProbeResult(markers=(Marker(rank=0, local_rank=0, port=1, pid=pid[0]),),
                               listening=frozenset({("127.0.0.1", 1)}), tcp_known=True)

    eng = Engine(Markers([Target(key="p", name="pod-0")]),
                 PlanSettings(base_port=1, local_base_port=free_port_block(1, start=40000)),
                 EngineSettings(poll_interval=60, settled_poll_interval=60, rediscover_interval=60))
    eng.start()
    try:
        readiness = eng._readiness
        calls = []
        apply = readiness.planning.apply_targets
        readiness.planning.apply_targets = lambda *a, **k: calls.append(1) or apply(*a, **k)
        readiness.probe_all(force=True)
        readiness.probe_all(force=True)
        assert calls == []  # the same markers as the first probe's
        pid[0] = 2  # the rank restarted
        readiness.probe_all(force=True)
        assert calls == [1]
        readiness.probe_all(force=True)
        assert calls == [1]
    finally:
        eng.stop()


def test_a_target_that_rediscovery_sees_changed_is_probed_at_once_however_settled():
    """A local rank's process ended: rediscovery (its marker's pid) no longer lists it, but the readiness came from
    the last settled probe, and the next was up to 30 s away. A target discovery sees changed is probed now."""
    from dbgfwd.rank.markers import Marker, ProbeResult

    alive = {0, 1}

    class Ranks(ScriptedProvider):
        def discover(self):
            ranks = tuple(RankInfo(r, r, 1 + r) for r in sorted(alive))
            return Discovery((Target(key="h", name="host", ranks=ranks),), where="here")

        def probe(self, target):
            return ProbeResult(markers=tuple(Marker(rank=r, local_rank=r, port=1 + r, pid=1) for r in sorted(alive)),
                               listening=frozenset(("127.0.0.1", 1 + r) for r in alive), tcp_known=True)

    from tests.conftest import free_port_block

    eng = Engine(Ranks([]), PlanSettings(base_port=1, local_base_port=free_port_block(2, start=40000)),
                 EngineSettings(poll_interval=0.05, settled_poll_interval=600, rediscover_interval=0.1,
                                rediscover_max=0.1))
    eng.start()
    try:
        assert _wait(lambda: [s.state for s in eng.snapshot()] == [RankState.READY] * 2)
        alive.discard(1)
        # Bounded far above a rediscovery round (0.1 s) and far below the settled probe (600 s).
        assert _wait(lambda: _state(eng, 1).state != RankState.READY, timeout=30)
        assert _state(eng, 0).state == RankState.READY
    finally:
        eng.stop()
