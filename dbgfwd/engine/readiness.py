"""Readiness: probe targets out of band (markers, listening sockets; never the debug port), on a schedule.

Targets a client is waiting on are probed often (the probe seeing the rank back is what wakes the
client), targets with ranks not ready less often, settled targets rarely. Probes run in a pool and are
bounded here, so one stuck provider call cannot stall the monitor.
"""

from __future__ import annotations

import functools
import logging
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import replace

from dbgfwd.engine.planning import Planning
from dbgfwd.engine.settings import EngineSettings
from dbgfwd.engine.table import RankTable
from dbgfwd.errors import DbgfwdError
from dbgfwd.plan.layout import of_job
from dbgfwd.providers.base import Capability, Provider, Target

log = logging.getLogger("dbgfwd.engine")


class Readiness:
    def __init__(self, table: RankTable, provider: Provider, settings: EngineSettings, planning: Planning):
        self.table = table
        self.provider = provider
        self.settings = settings
        self.planning = planning
        self._last_probe: dict[str, float] = {}
        self._settled_every: dict[str, float] = {}  # target key -> its settled probe interval now
        self._last_seen: dict[str, tuple] = {}  # target key -> what its last probe found
        self._said: set = set()
        self._roots_changed = False
        self._pool = ThreadPoolExecutor(max_workers=settings.probe_workers, thread_name_prefix="dbgfwd-probe")

    def _due(self, force: bool) -> list[Target]:
        s = self.settings
        with self.table.lock:
            targets = list(self.table.targets.values())
            entries = list(self.table.ranks.values())
        pending = {r.target.key for r in entries if r.target and not r.ready}
        hot = {r.target.key for r in entries if r.target and r.retrying}
        # A target with no ranks planned yet is looked at often (its ranks are starting). Known from the plan,
        # not from t.ranks: targets whose layout comes from markers never carry ranks of their own, and 128
        # such pods were probed every second, settled or not.
        planned = {r.target.key for r in entries if r.target}
        now = time.monotonic()
        due = []
        for t in targets:
            if t.key in hot:
                interval = s.hot_poll_interval
            elif t.key in pending or (not t.ranks and t.key not in planned):
                interval = s.poll_interval
            else:
                interval = self._settled_every.get(t.key, s.settled_poll_interval) * spread(t.key)
            if force or now - self._last_probe.get(t.key, 0.0) >= interval:
                due.append(t)
        return due

    def probe_soon(self, keys) -> None:
        """These targets changed: probe them at the next round, and pace them from the start again."""
        for key in keys:
            self._last_probe.pop(key, None)
            self._settled_every.pop(key, None)

    def probe_all(self, force: bool = False) -> None:
        oob = self.provider.has(Capability.OUT_OF_BAND_READINESS)
        due = self._due(force) if oob else []
        now = time.monotonic()
        results = {}
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
            self._pace(key, results[key])
        self._roots_changed = False
        with self.table.lock:  # the probes whose markers differ from what the last probe of their target found
            before = self.table.probe_results
            fresh = [k for k, v in results.items()
                     if v is not None and getattr(v, "markers", ()) != getattr(before.get(k), "markers", None)]
        changed, wake = self._fold(results, oob)
        self._say_disagreements(results)
        if self._roots_changed:  # a rank's own folder is its source root: launch.json follows
            self.planning.plan_changed()
        if wake:
            self.table.wake_ranks(wake)  # their ranks are (back) up: the waiting clients retry now
        # Markers may reveal ranks not planned yet (a job still starting, or every rank at the first probe when
        # the layout comes from markers): the probe that revealed them also says whether they are ready, so they
        # are not left waiting for the next round (at 128 pods a round of probes takes seconds). Only new markers
        # can: settled probes that find what they found before skip it (comparing every target of 1024 ranks
        # was a third of a settled attach's CPU once probes were spread out).
        if fresh and any(getattr(results[k], "markers", ()) for k in fresh):
            if self.planning.apply_targets(list(self.table.targets.values())):
                again, wake_new = self._fold(results, oob)
                changed |= again
                if wake_new:
                    self.table.wake_ranks(wake_new)
        if changed:
            self.table.state_changed()

    def _pace(self, key: str, res) -> None:
        """A settled target whose probes keep finding the same is probed less and less often (up to the
        provider's settled_probe_max); anything new sets it back to settled_poll_interval."""
        s = self.settings
        seen = None if res is None else (tuple(sorted((m.pid, m.rank, m.port) for m in getattr(res, "markers", ()))),
                                         getattr(res, "listening", None), getattr(res, "tcp_known", None))
        every = self._settled_every.get(key, s.settled_poll_interval)
        if seen is not None and seen == self._last_seen.get(key):
            every = min(max(s.settled_poll_interval, self.provider.settled_probe_max), every * 2)
        else:
            every = s.settled_poll_interval
        self._settled_every[key] = every
        self._last_seen[key] = seen

    def _fold(self, results: dict, oob: bool) -> tuple[bool, list]:
        """Readiness of every rank from the probes' results. (anything changed, entries to wake)."""
        changed, wake = False, []
        # each probed target's markers of this job, by rank: one pass, not one per rank (1024 ranks on a node)
        by_rank: dict[str, dict[int, list]] = {}
        for key, res in results.items():
            if res is not None:
                index: dict[int, list] = {}
                for m in of_job(res.markers, self.planning.plan.base_port):
                    index.setdefault(m.rank, []).append(m)
                by_rank[key] = index
        with self.table.lock:
            self.table.probe_results.update({k: v for k, v in results.items() if v is not None})
            for r in self.table.ranks.values():
                t = r.target
                if t is not None and not t.running:
                    changed |= _explain_down(r, t)
                elif r.down_since is not None:  # back: the outage's reason goes with it
                    r.down_since = None
                    if not r.relays and not r.failed:
                        r.reason = ""
                    changed = True
                if t is None or not t.running:
                    ready = False
                elif not oob:
                    ready = True
                elif t.key in results:
                    res = results[t.key]
                    if res is not None:
                        for m in by_rank[t.key].get(r.planned.rank, ()):
                            ident = (t.key, m.hostname, m.pid, m.started)
                            if ident != r.upstream:  # a new process behind this rank (restart, new pod)
                                r.upstream = ident
                                r.generation += 1
                                changed = True
                            if m.port != r.planned.remote_port:  # restarted on another port: follow it
                                r.planned = replace(r.planned, remote_port=m.port)
                            program = m.argv[0] if m.argv else None
                            if m.cwd and (m.cwd, program) != (r.marker_cwd, r.program):
                                r.marker_cwd, r.program = m.cwd, program
                                changed = self._roots_changed = True
                        r.foreign_uid = res.foreign_listener(r.planned.remote_port)
                    ready = bool(res and res.port_ready(r.planned.remote_port))
                else:
                    continue
                if ready and r.retrying:
                    wake.append(r)
                if ready != r.ready:
                    r.ready = ready
                    if ready:
                        r.failed = ""
                        r.reason = ""
                    changed = True
        return changed, wake

    def _say_disagreements(self, results: dict) -> None:
        """Ranks of one target running in different folders: each config maps its own, and the user is told
        once (a mapping that fits some ranks only is a classic "breakpoints bind on rank 0 only")."""
        for key, res in results.items():
            cwds = sorted({m.cwd for m in of_job(getattr(res, "markers", ()), self.planning.plan.base_port) if m.cwd})
            if len(cwds) > 1 and (key, tuple(cwds)) not in self._said:
                self._said.add((key, tuple(cwds)))
                t = self.table.targets.get(key)
                log.warning("ranks on %s run in different folders (%s): each rank's attach config maps its own",
                            t.name if t else key, ", ".join(cwds))

    def _probe_one(self, target: Target):
        try:
            return self.provider.probe(target)
        except DbgfwdError as exc:
            log.info("probe of %s failed: %s", target.name, exc.message)
        except Exception as exc:
            log.debug("probe of %s failed: %s", target.name, exc, exc_info=True)
        return None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@functools.lru_cache(maxsize=8192)
def spread(key: str) -> float:
    """A settled target's own stretch of its probe interval, in [0.75, 1.25). Every pod of a job becomes ready at
    about the same moment, and identical intervals kept their probes together: 128 execs in one second (a burst
    on the API server, and a third of a second of CPU here) once a minute, instead of a few every second."""
    return 0.75 + (zlib.crc32(key.encode()) % 1024) / 2048


def _explain_down(r, t: Target) -> bool:
    """A rank whose target is down (host unreachable, pod pending) says why and since when, also with no
    client waiting: a 5-minute outage must not show an empty reason. True when the reason changed."""
    if r.relays or r.failed:
        return False
    if r.down_since is None:
        r.down_since = time.time()
    since = time.strftime("%H:%M:%S", time.localtime(r.down_since))
    reason = f"{t.name}: {t.status} (since {since}; dbgfwd keeps trying)"
    if reason == r.reason:
        return False
    r.reason = reason
    return True
