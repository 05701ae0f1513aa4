"""The forwarding engine: one local listener per rank, kept up for the whole session.

It discovers targets through a provider, plans local ports, binds a 127.0.0.1 listener per rank,
and serves each accepted client with its own upstream stream (with capped, jittered backoff while
the rank is not there yet). A monitor thread re-discovers, probes readiness out of band and calls
the provider's keepalive. Listeners never close while the session runs: a rank that restarts, moves
to a new port or a new pod is served again on the same local port.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

from dbgfwd.errors import DbgfwdError, NotFoundError, PortError, UpstreamError
from dbgfwd.planner import PlannedRank, PortMemory, RankSlot, assign_local_ports
from dbgfwd.providers.base import Capability, Provider, Target
from dbgfwd.ranks import PlanSettings, RankState, RankStatus, slots_for, with_marker_ranks  # noqa: F401
from dbgfwd.relay import Acceptor, Relay, bind_listener, client_gone

log = logging.getLogger("dbgfwd.engine")


@dataclass(frozen=True)
class EngineSettings:
    bind_host: str = "127.0.0.1"
    connect_timeout: float = 10.0  # one open_stream attempt
    client_wait: float = 60.0  # how long an accepted client waits for its rank before being closed
    backoff_initial: float = 0.1
    backoff_max: float = 3.0
    poll_interval: float = 1.0  # readiness probe of targets with ranks not ready
    # Probe interval of targets while a client waits for its rank: the probe seeing the rank back is
    # what wakes the waiting client (instead of it sleeping out a backoff of up to backoff_max).
    hot_poll_interval: float = 0.2
    settled_poll_interval: float = 5.0  # probe of targets whose ranks are all ready
    rediscover_interval: float = 2.0
    # While discovery keeps returning the same targets and every rank is ready, the interval doubles
    # up to this (256 ranks re-read every 2 s cost ~1% of a core); any change resets it.
    rediscover_max: float = 10.0
    probe_workers: int = 16
    probe_timeout: float = 30.0  # providers bound their own probes; this bounds a provider that does not


@dataclass
class _Rank:
    planned: PlannedRank
    target: Target | None = None
    ready: bool = False
    failed: str = ""
    reason: str = ""
    retrying: int = 0  # clients currently waiting in backoff
    relays: set = field(default_factory=set)
    connections: int = 0
    failures: int = 0
    bytes_up: int = 0  # of finished relays
    bytes_down: int = 0
    listener: object = None
    wake_gen: int = 0  # bumped (under Engine._wake) when a waiting client should retry now


def backoff_delays(initial: float, maximum: float) -> Iterable[float]:
    """Capped exponential backoff with full jitter (never two clients in lock-step)."""
    delay = initial
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(maximum, delay * 2)


class Engine:
    def __init__(self, provider: Provider, plan: PlanSettings, settings: EngineSettings | None = None,
                 memory: PortMemory | None = None,
                 on_plan_change: Callable[[list[RankStatus]], None] | None = None,
                 on_state_change: Callable[[], None] | None = None):
        self.provider = provider
        self.plan = plan
        self.settings = settings or EngineSettings()
        self.memory = memory
        self._on_plan_change = on_plan_change
        self._on_state_change = on_state_change
        self._lock = threading.RLock()
        self._ranks: dict[int, _Rank] = {}
        self._targets: dict[str, Target] = {}
        self._probe_results: dict[str, object] = {}
        self._last_probe: dict[str, float] = {}
        self._stop = threading.Event()
        self._wake = threading.Condition()  # waiting clients sleep on it between upstream attempts
        self._kick = threading.Event()  # wakes the monitor early (a client started waiting)
        self._acceptor = Acceptor(self._accepted)
        self._monitor: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=self.settings.probe_workers, thread_name_prefix="dbgfwd-probe")
        self.where = ""
        self._started = False
        self._closed = False
        self._applied: tuple | None = None  # inputs of the last _apply_targets (skip identical passes)

    # ---------- lifecycle ----------
    def start(self) -> None:
        """Discover, plan and bind every listener; raise if nothing can be forwarded."""
        discovery = self.provider.discover()
        self.where = discovery.where
        self._acceptor.start()
        self._started = True
        self._apply_targets(discovery.targets, initial=True)
        if self.plan.expected_ranks and not self._ranks:
            self._plan_expected()
        self._probe_all(force=True)
        with self._lock:
            nothing = not self._ranks and not self._targets
        if nothing:
            self._acceptor.stop()
            self._started = False
            raise NotFoundError(f"no ranks found: looked {self.where}",
                                hint="start the ranks (dbgfwd-rank), check the target spec, or pass --ranks N "
                                     "to plan ranks that have not started yet")
        self._monitor = threading.Thread(target=self._monitor_loop, name="dbgfwd-monitor", daemon=True)
        self._monitor.start()

    def stop(self) -> None:
        """Close every listener and relay and the provider; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._kick.set()
        with self._wake:
            self._wake.notify_all()
        if self._monitor:
            self._monitor.join(timeout=10)
        if self._started:
            self._acceptor.stop()
        with self._lock:
            ranks = list(self._ranks.values())
        for r in ranks:
            if r.listener is not None:
                try:
                    r.listener.close()
                except OSError:
                    pass
            for relay in list(r.relays):
                relay.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.provider.close()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stop.wait(timeout)

    @property
    def targets(self) -> list[Target]:
        with self._lock:
            return list(self._targets.values())

    # ---------- planning ----------
    def _reserved_ports(self) -> set[int]:
        if not self.provider.has(Capability.SHARES_LOCAL_PORTS):
            return set()
        # The ranks' own debug ports live in our port space: never listen on them.
        span = max(64, self.plan.ranks_per_node or 0)
        return set(range(self.plan.base_port, self.plan.base_port + span)) | {
            r.planned.remote_port for r in self._ranks.values()}

    def _add_slots(self, slots: list[tuple[RankSlot, Target | None]]) -> list[int]:
        """Plan and bind listeners for slots of ranks not yet planned. Returns the new ranks."""
        new = [(s, t) for s, t in slots if s.rank not in self._ranks
               and (self.plan.only is None or s.rank in self.plan.only)]
        if not new:
            return []
        remembered = self.memory.load() if self.memory else {}
        taken = {r.planned.local_port for r in self._ranks.values()}
        planned = assign_local_ports([s for s, _ in new], self.plan.local_base_port, remembered,
                                     reserved=self._reserved_ports(), strict=self.plan.strict_local_ports,
                                     taken=taken)
        by_rank = {t_slot.rank: t for t_slot, t in new}
        bound: list[int] = []
        for p in planned:
            try:
                listener = bind_listener(self.settings.bind_host, p.local_port)
            except OSError as exc:
                # Lost a race for the port between planning and binding: say which and why.
                raise PortError(f"cannot listen on {self.settings.bind_host}:{p.local_port} for rank {p.rank}: "
                                f"{exc.strerror or exc}", hint="free the port or choose another --local-base-port")
            rank = _Rank(planned=p, target=by_rank.get(p.rank), listener=listener)
            self._ranks[p.rank] = rank
            self._acceptor.add(listener, p.rank)
            bound.append(p.rank)
        if self.memory:
            self.memory.save(planned)
        return bound

    def _plan_expected(self) -> None:
        rpn = self.plan.ranks_per_node or self.plan.expected_ranks
        slots = []
        for rank in range(self.plan.expected_ranks or 0):
            node_index, lr = divmod(rank, rpn)
            slots.append((RankSlot(rank=rank, node=f"node{node_index}", node_index=node_index, local_rank=lr,
                                   remote_port=self.plan.base_port + lr, target_key=""), None))
        with self._lock:
            new = self._add_slots(slots)
        if new:
            self._plan_changed()

    def _apply_targets(self, targets: Sequence[Target], initial: bool = False) -> bool:
        """Fold a discovery (and the last probes' markers) into the plan. False: nothing new to apply."""
        with self._lock:
            inputs = (list(targets), {k: getattr(v, "markers", ()) for k, v in self._probe_results.items()})
            if not initial and inputs == self._applied:
                return False
            self._applied = inputs
            self._targets = {t.key: t for t in targets}
            known = [self._with_probed_ranks(t) for t in targets]
            slots = slots_for(known, self.plan.base_port, self.plan.ranks_per_node, self.plan.expected_ranks)
            changed = bool(self._add_slots(slots))
            for slot, target in slots:
                rank = self._ranks.get(slot.rank)
                if rank is None:
                    continue
                if rank.target is None or rank.target.key != target.key or rank.target != target:
                    rank.target = target
                    changed = True
                if rank.planned.remote_port != slot.remote_port or rank.planned.node != slot.node:
                    rank.planned = replace(rank.planned, remote_port=slot.remote_port, node=slot.node,
                                           node_index=slot.node_index, local_rank=slot.local_rank,
                                           target_key=slot.target_key)
                    changed = True
        if changed or initial:
            self._plan_changed()
        return True

    def _with_probed_ranks(self, target: Target) -> Target:
        """Fold ranks seen in the last probe's markers into the target."""
        return with_marker_ranks(target, self._probe_results.get(target.key))

    # ---------- monitoring ----------
    def _monitor_loop(self) -> None:
        last_discover = time.monotonic()
        last_keepalive = time.monotonic()
        rediscover = self.provider.has(Capability.REDISCOVERY)
        last_error: str | None = None
        discover_every = self.settings.rediscover_interval
        while True:
            self._kick.wait(self.settings.hot_poll_interval if self._clients_waiting()
                            else self.settings.poll_interval)
            self._kick.clear()
            if self._stop.is_set():
                return
            now = time.monotonic()
            try:
                if rediscover and now - last_discover >= discover_every:
                    last_discover = now
                    discovery = self.provider.discover()
                    if self._apply_targets(discovery.targets) or not self._settled():
                        discover_every = self.settings.rediscover_interval
                    else:
                        discover_every = min(self.settings.rediscover_max, discover_every * 2)
                self._probe_all()
                if now - last_keepalive >= self.provider.keepalive_interval:
                    last_keepalive = now
                    self.provider.keepalive()
                if last_error is not None:
                    log.warning("discovery works again (%s)", self.provider.name)
                    last_error = None
            except DbgfwdError as exc:
                # Discovery failing mid-session (API server down, token expired) must not drop
                # listeners; it is shown on every rank not currently connected, and logged once
                # per distinct message rather than at every retry.
                if exc.message != last_error:
                    log.warning("%s", exc.message)
                    last_error = exc.message
                self._set_reason_all(exc.message)
            except Exception as exc:  # never let the monitor die silently
                log.exception("monitor error: %s", exc)

    def _clients_waiting(self) -> bool:
        with self._lock:
            return any(r.retrying for r in self._ranks.values())

    def _settled(self) -> bool:
        with self._lock:
            return all(r.ready and not r.retrying and not r.failed for r in self._ranks.values())

    def _set_reason_all(self, reason: str) -> None:
        with self._lock:
            for r in self._ranks.values():
                if not r.relays:
                    r.reason = reason
        self._state_changed()

    def _probe_all(self, force: bool = False) -> None:
        oob = self.provider.has(Capability.OUT_OF_BAND_READINESS)
        with self._lock:
            targets = list(self._targets.values())
            pending_keys = {r.target.key for r in self._ranks.values() if r.target and not r.ready}
            hot_keys = {r.target.key for r in self._ranks.values() if r.target and r.retrying}
        now = time.monotonic()
        due = []
        for t in targets:
            if t.key in hot_keys:
                interval = self.settings.hot_poll_interval
            elif t.key in pending_keys or not t.ranks:
                interval = self.settings.poll_interval
            else:
                interval = self.settings.settled_poll_interval
            if force or now - self._last_probe.get(t.key, 0.0) >= interval:
                due.append(t)
        results = {}
        if oob and due:
            futures = {t.key: self._pool.submit(self._probe_one, t) for t in due if t.running}
            for key, fut in futures.items():
                try:
                    results[key] = fut.result(timeout=self.settings.probe_timeout)
                except FuturesTimeout:
                    # A probe stuck in its provider must not stall the monitor: rediscovery and
                    # keepalives of every other target depend on this loop. Readiness is unknown.
                    log.warning("readiness probe of %s did not finish in %.0fs", key, self.settings.probe_timeout)
                    results[key] = None
                self._last_probe[key] = now
        changed_ranks = False
        wake = []
        with self._lock:
            self._probe_results.update({k: v for k, v in results.items() if v is not None})
            for r in self._ranks.values():
                t = r.target
                if t is None or not t.running:
                    ready = False
                elif not oob:
                    ready = True
                elif t.key in results:
                    res = results[t.key]
                    ready = bool(res and res.port_ready(r.planned.remote_port))
                    if res is not None:
                        # a rank that restarted on another port: follow it
                        for m in res.markers:
                            if m.rank == r.planned.rank and m.port != r.planned.remote_port:
                                r.planned = replace(r.planned, remote_port=m.port)
                                ready = res.port_ready(m.port)
                else:
                    continue
                if ready and r.retrying:
                    wake.append(r)  # its rank is (back) up: the waiting clients retry now
                if ready != r.ready:
                    r.ready = ready
                    if ready:
                        r.failed = ""
                        r.reason = ""
                    changed_ranks = True
        if wake:
            with self._wake:
                for r in wake:
                    r.wake_gen += 1
                self._wake.notify_all()
        # Markers may reveal ranks not planned yet (a job still starting).
        if results and any(getattr(v, "markers", ()) for v in results.values()):
            self._apply_targets(list(self._targets.values()))
        if changed_ranks:
            self._state_changed()

    def _probe_one(self, target: Target):
        try:
            return self.provider.probe(target)
        except DbgfwdError as exc:
            log.info("probe of %s failed: %s", target.name, exc.message)
        except Exception as exc:
            log.debug("probe of %s failed: %s", target.name, exc, exc_info=True)
        return None

    # ---------- serving clients ----------
    def _accepted(self, rank_id, client) -> None:
        threading.Thread(target=self._serve, args=(rank_id, client), name=f"dbgfwd-rank{rank_id}",
                         daemon=True).start()

    def _serve(self, rank_id: int, client) -> None:
        with self._lock:
            rank = self._ranks[rank_id]
        upstream = self._open_upstream(rank, client)
        if upstream is None:
            client.close()
            return
        relay = Relay(client, upstream, on_done=lambda rl: self._relay_done(rank, rl), name=f"rank{rank_id}")
        with self._lock:
            rank.relays.add(relay)
            rank.connections += 1
            rank.failed = ""
            rank.reason = ""
        self._state_changed()
        relay.run()

    def _open_upstream(self, rank: _Rank, client):
        s = self.settings
        deadline = time.monotonic() + s.client_wait
        delays = backoff_delays(s.backoff_initial, s.backoff_max)
        waiting = False
        try:
            while not self._stop.is_set():
                with self._lock:
                    target, port = rank.target, rank.planned.remote_port
                if target is not None and target.running:
                    try:
                        return self.provider.open_stream(target, port, s.connect_timeout)
                    except UpstreamError as exc:
                        with self._lock:
                            rank.failures += 1
                            rank.reason = exc.message
                            if not exc.retryable:
                                rank.failed = exc.message
                        self._state_changed()
                        if not exc.retryable:
                            log.warning("rank %s: %s", rank.planned.rank, exc.message)
                            return None
                    except (OSError, EOFError) as exc:
                        with self._lock:
                            rank.failures += 1
                            rank.reason = f"upstream: {exc}"
                else:
                    with self._lock:
                        rank.reason = "waiting for the rank to start" if target is None else \
                            f"target {target.name} is {target.status}"
                if not waiting:
                    waiting = True
                    with self._lock:
                        rank.retrying += 1
                    self._kick.set()  # the monitor switches to hot probing of this target
                    self._state_changed()
                if time.monotonic() > deadline or client_gone(client):
                    return None
                self._sleep_unless_woken(rank, min(next(delays), max(0.0, deadline - time.monotonic())))
            return None
        finally:
            if waiting:
                with self._lock:
                    rank.retrying -= 1
                self._state_changed()

    def _sleep_unless_woken(self, rank: _Rank, delay: float) -> None:
        """Back off for `delay`, or less if a probe sees the rank come back (or the engine stops)."""
        with self._wake:
            gen = rank.wake_gen
            self._wake.wait_for(lambda: rank.wake_gen != gen or self._stop.is_set(), timeout=delay)

    def _relay_done(self, rank: _Rank, relay: Relay) -> None:
        with self._lock:
            rank.relays.discard(relay)
            rank.bytes_up += relay.counters.up
            rank.bytes_down += relay.counters.down
        self._state_changed()

    # ---------- status ----------
    def _state_of(self, r: _Rank) -> RankState:
        if r.failed:
            return RankState.FAILED
        if r.relays:
            return RankState.CONNECTED
        if r.retrying:
            return RankState.RECONNECTING
        if r.listener is None:
            return RankState.PLANNED
        return RankState.READY if r.ready else RankState.WAITING

    def snapshot(self) -> list[RankStatus]:
        with self._lock:
            out = []
            for rank_id in sorted(self._ranks):
                r = self._ranks[rank_id]
                live_up = sum(rl.counters.up for rl in r.relays)
                live_down = sum(rl.counters.down for rl in r.relays)
                out.append(RankStatus(
                    planned=r.planned, target_name=r.target.name if r.target else r.planned.node,
                    target_status=r.target.status if r.target else "not found yet", state=self._state_of(r),
                    reason=r.failed or r.reason, clients=len(r.relays), connections=r.connections,
                    failures=r.failures, bytes_up=r.bytes_up + live_up, bytes_down=r.bytes_down + live_down,
                    remote_root=r.target.remote_root if r.target else None))
            return out

    def _plan_changed(self) -> None:
        if self._on_plan_change:
            try:
                self._on_plan_change(self.snapshot())
            except DbgfwdError as exc:
                log.warning("%s", exc.message)
        self._state_changed()

    def _state_changed(self) -> None:
        if self._on_state_change:
            self._on_state_change()
