"""The rank table: every planned rank's live state, the one thing the engine's parts share.

Written by three kinds of thread (planning and readiness on the monitor thread, serving threads per
client); every field of a RankEntry is read and written under `RankTable.lock`. Waiting clients sleep
on `RankTable.wake` and are woken per rank (a generation counter) when readiness sees the rank back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from dbgfwd.engine.status import RankState, RankStatus
from dbgfwd.plan.layout import PlannedRank
from dbgfwd.providers.base import Target


@dataclass
class RankEntry:
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
    clients: int = 0  # accepted connections being served (waiting or relayed)
    foreign_uid: int | None = None  # another user listens on the rank's port (the rank died): never connect
    wake_gen: int = 0  # bumped (under RankTable.wake) when a waiting client should retry now
    last_root: str | None = None  # the source root last known: kept while its target is unreachable
    down_since: float | None = None  # wall-clock time its target was first seen down (for the reason)
    marker_cwd: str | None = None  # the rank's own working directory (its marker): the truest remote root
    program: str | None = None  # what it runs (its marker's argv[0])
    upstream: tuple | None = None  # which process is behind the rank (target, host, pid, start), from its marker
    generation: int = 0  # bumped each time another process is seen behind the rank (a restart, a new pod)

    @property
    def state(self) -> RankState:
        if self.failed:
            return RankState.FAILED
        if self.relays:
            return RankState.CONNECTED
        if self.retrying:
            return RankState.RECONNECTING
        if self.listener is None:
            return RankState.PLANNED
        return RankState.READY if self.ready else RankState.WAITING

    def status(self) -> RankStatus:
        live_up = sum(rl.counters.up for rl in self.relays)
        live_down = sum(rl.counters.down for rl in self.relays)
        t = self.target
        # The rank's own working directory beats its target's (a container's workingDir is where the image
        # starts, not necessarily where the user ran `cd /workspace && torchrun train.py`).
        root = self.marker_cwd or (t.remote_root if t is not None else None)
        if root:
            self.last_root = root
        else:  # a host out of reach reports no root: launch.json keeps its pathMappings meanwhile
            root = self.last_root
        return RankStatus(
            planned=self.planned, target_name=t.name if t else self.planned.node,
            target_status=t.status if t else "not found yet", state=self.state,
            reason=self.failed or self.reason, clients=len(self.relays), connections=self.connections,
            failures=self.failures, bytes_up=self.bytes_up + live_up, bytes_down=self.bytes_down + live_down,
            remote_root=root, program=self.program, generation=self.generation, held=self.retrying)


class RankTable:
    def __init__(self, on_state_change: Callable[[], None] | None = None):
        self.lock = threading.RLock()
        self.ranks: dict[int, RankEntry] = {}
        self.targets: dict[str, Target] = {}
        self.probe_results: dict[str, object] = {}  # target key -> last ProbeResult
        self.wake = threading.Condition()  # waiting clients sleep on it between upstream attempts
        self.version = 0  # bumped by every state_changed()
        self._version_lock = threading.Lock()
        self._on_state_change = on_state_change

    def entries(self) -> list[RankEntry]:
        with self.lock:
            return list(self.ranks.values())

    def snapshot(self) -> list[RankStatus]:
        with self.lock:
            return [self.ranks[r].status() for r in sorted(self.ranks)]

    def clients_waiting(self) -> bool:
        with self.lock:
            return any(r.retrying for r in self.ranks.values())

    def settled(self) -> bool:
        with self.lock:
            return all(r.ready and not r.retrying and not r.failed for r in self.ranks.values())

    def set_reason_all(self, reason: str) -> None:
        """Say why on every rank without a connected client (e.g. discovery failing)."""
        with self.lock:
            for r in self.ranks.values():
                if not r.relays:
                    r.reason = reason
        self.state_changed()

    def state_changed(self) -> None:
        # Readers that poll (the live view, the job session, session.json's heartbeat) look again only when
        # this moved. Bumped under a lock: two threads reading the same old value would store one increment,
        # and a change made between them would never be looked at.
        with self._version_lock:
            self.version += 1
        if self._on_state_change:
            self._on_state_change()

    # -- waking clients that wait for their rank --
    def wake_ranks(self, entries: list[RankEntry]) -> None:
        with self.wake:
            for r in entries:
                r.wake_gen += 1
            self.wake.notify_all()

    def wake_all(self) -> None:
        with self.wake:
            self.wake.notify_all()

    def sleep_unless_woken(self, rank: RankEntry, delay: float, stop: threading.Event) -> None:
        """Back off for `delay`, or less if readiness sees the rank come back (or the engine stops)."""
        with self.wake:
            gen = rank.wake_gen
            self.wake.wait_for(lambda: rank.wake_gen != gen or stop.is_set(), timeout=delay)
