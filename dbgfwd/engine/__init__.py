"""The forwarding engine: one local listener per rank, kept up for the whole session.

It discovers targets through a provider, plans local ports, binds a 127.0.0.1 listener per rank,
and serves each accepted client with its own upstream stream (with capped, jittered backoff while
the rank is not there yet). A monitor thread re-discovers, probes readiness out of band and calls
the provider's keepalive. Listeners never close while the session runs: a rank that restarts, moves
to a new port or a new pod is served again on the same local port.

The parts share one RankTable (table.py) and import nothing but it, their settings and the layers
below: planning.py (ranks and listeners), readiness.py (out-of-band probes), monitor.py (the loop),
serving.py (clients). This class only wires them and is the engine's whole public face.
"""

from __future__ import annotations

import threading
from typing import Callable

from dbgfwd.engine.monitor import Monitor
from dbgfwd.engine.planning import Planning
from dbgfwd.engine.readiness import Readiness
from dbgfwd.engine.serving import Server
from dbgfwd.engine.settings import EngineSettings
from dbgfwd.engine.status import RankState, RankStatus
from dbgfwd.engine.table import RankTable
from dbgfwd.errors import NotFoundError
from dbgfwd.net.listeners import Acceptor
from dbgfwd.plan.layout import PlanSettings
from dbgfwd.providers.base import Provider, Target
from dbgfwd.workspace.ports import PortMemory

__all__ = ["Engine", "EngineSettings", "PlanSettings", "RankState", "RankStatus"]


class Engine:
    def __init__(self, provider: Provider, plan: PlanSettings, settings: EngineSettings | None = None,
                 memory: PortMemory | None = None,
                 on_plan_change: Callable[[list[RankStatus]], None] | None = None,
                 on_state_change: Callable[[], None] | None = None):
        self.provider = provider
        self.plan = plan
        self.settings = settings or EngineSettings()
        self.table = RankTable(on_state_change)
        self._stop = threading.Event()
        self._kick = threading.Event()  # wakes the monitor early (a client started waiting)
        self._server = Server(self.table, provider, self.settings, self._stop, self._kick)
        self._acceptor = Acceptor(self._server.accepted)
        self._planning = Planning(self.table, provider, plan, self.settings.bind_host, memory, self._acceptor,
                                  on_plan_change)
        self._readiness = Readiness(self.table, provider, self.settings, self._planning)
        self._monitor = Monitor(self.table, provider, self.settings, self._planning, self._readiness,
                                self._stop, self._kick)
        self.where = ""
        self.notes: list[str] = []  # warnings for the user once the engine has started
        self.problems: dict[str, str | None] = {}  # session-wide problems the live view shows (launch.json)
        self._started = False
        self._closed = False

    def start(self) -> None:
        """Discover, plan and bind every listener; raise if nothing can be forwarded."""
        discovery = self.provider.discover()
        self.where = discovery.where
        self._acceptor.start()
        self._started = True
        self._planning.apply_targets(discovery.targets, initial=True)
        if self.plan.expected_ranks:
            self._planning.plan_expected()
        self._readiness.probe_all(force=True)
        with self.table.lock:
            nothing = not self.table.ranks and not self.table.targets
        if nothing:
            self._acceptor.stop()
            self._started = False
            raise NotFoundError(f"no ranks found: looked {self.where}",
                                hint="start the ranks (dbgfwd-rank), check the target spec, or pass --ranks N "
                                     "to plan ranks that have not started yet")
        self._monitor.start()

    def stop(self) -> None:
        """Close every listener and relay and the provider; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._kick.set()
        self.table.wake_all()
        self._monitor.join(timeout=10)  # a no-op when it never started
        if self._started:
            self._acceptor.stop()
        for r in self.table.entries():
            if r.listener is not None:
                try:
                    r.listener.close()
                except OSError:
                    pass
            for relay in list(r.relays):
                relay.close()
        self._readiness.close()
        self.provider.close()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stop.wait(timeout)

    @property
    def targets(self) -> list[Target]:
        with self.table.lock:
            return list(self.table.targets.values())

    @property
    def version(self) -> int:
        """Moves on every change of a rank's state, plan or reason (see RankTable.state_changed)."""
        return self.table.version

    def relaying(self) -> bool:
        """Some debugger connection is open (its byte counts move without a state change)."""
        with self.table.lock:
            return any(r.relays for r in self.table.ranks.values())

    def snapshot(self) -> list[RankStatus]:
        return self.table.snapshot()
