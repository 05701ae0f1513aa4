"""The monitor thread: rediscovery (slowing down while nothing changes), readiness, keepalives."""

from __future__ import annotations

import logging
import threading
import time

from dbgfwd.engine.planning import Planning
from dbgfwd.engine.readiness import Readiness
from dbgfwd.engine.settings import EngineSettings
from dbgfwd.engine.table import RankTable
from dbgfwd.errors import DbgfwdError
from dbgfwd.providers.base import Capability, Provider

log = logging.getLogger("dbgfwd.engine")


class Monitor:
    def __init__(self, table: RankTable, provider: Provider, settings: EngineSettings, planning: Planning,
                 readiness: Readiness, stop: threading.Event, kick: threading.Event):
        self.table = table
        self.provider = provider
        self.settings = settings
        self.planning = planning
        self.readiness = readiness
        self._stop = stop
        self._kick = kick  # set to wake the loop early (a client started waiting, the engine stops)
        self._thread = threading.Thread(target=self._loop, name="dbgfwd-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        s = self.settings
        last_discover = last_keepalive = time.monotonic()
        rediscover = self.provider.has(Capability.REDISCOVERY)
        last_error: str | None = None
        discover_every = s.rediscover_interval
        while True:
            self._kick.wait(s.hot_poll_interval if self.table.clients_waiting() else s.poll_interval)
            self._kick.clear()
            if self._stop.is_set():
                return
            now = time.monotonic()
            discovered = False
            try:
                if rediscover and now - last_discover >= discover_every:
                    last_discover = now
                    discovery = self.provider.discover()
                    discovered = True
                    with self.table.lock:
                        before = dict(self.table.targets)
                    # A target that discovery sees differently (a rank's process gone, a pod restarted) is probed
                    # now, however settled it was: its readiness must not wait for a slow settled probe.
                    self.readiness.probe_soon([t.key for t in discovery.targets if before.get(t.key) != t])
                    if self.planning.apply_targets(discovery.targets) or not self.table.settled():
                        discover_every = s.rediscover_interval
                    else:
                        discover_every = min(s.rediscover_max, discover_every * 2)
                self.readiness.probe_all()
                if now - last_keepalive >= self.provider.keepalive_interval:
                    last_keepalive = now
                    self.provider.keepalive()
                if last_error is not None and discovered:  # said only when discovery really ran again
                    log.warning("discovery works again (%s)", self.provider.name)
                    last_error = None
            except DbgfwdError as exc:
                # Discovery failing mid-session (API server down, token expired) must not drop
                # listeners; it is shown on every rank not currently connected, and logged once
                # per distinct message rather than at every retry.
                if exc.message != last_error:
                    log.warning("%s", exc.message)
                    last_error = exc.message
                self.table.set_reason_all(exc.message)
            except Exception as exc:  # never let the monitor die silently
                log.exception("monitor error: %s", exc)
