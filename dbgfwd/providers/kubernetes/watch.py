"""A background pod watch (list + watch from its resourceVersion, re-listing when it expires)."""

from __future__ import annotations

import logging
import threading
from typing import Callable

from dbgfwd.errors import AuthError, DbgfwdError

log = logging.getLogger("dbgfwd.providers.kubernetes")


class PodWatch:
    """Calls `on_event(type, pod)` for every pod change in the namespace matching `selector`.

    Runs in one daemon thread. A list first (its items reported as MODIFIED) gives a consistent
    starting point; a watch error (410 Gone, dropped connection) restarts from a fresh list after a
    short backoff. Auth errors stop it: discover() reports those to the user.
    """

    def __init__(self, cluster, selector: str | None, on_event: Callable[[str, dict], None],
                 window: int = 240):
        self._cluster = cluster
        self._selector = selector
        self._on_event = on_event
        self._window = window
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dbgfwd-k8s-watch", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._cluster.stop_watch()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                pods, version = self._cluster.list_pods(self._selector)
                for pod in pods:
                    self._on_event("MODIFIED", pod)
                for kind, pod in self._cluster.watch_pods(self._selector, version, self._window):
                    if self._stop.is_set():
                        return
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._on_event(kind, pod)
                    backoff = 0.5
            except AuthError as exc:
                log.warning("pod watch stopped: %s", exc.message)
                return
            except (DbgfwdError, OSError, ValueError) as exc:
                if self._stop.is_set():
                    return
                log.info("pod watch interrupted (%s); restarting", getattr(exc, "message", type(exc).__name__))
            except Exception as exc:  # urllib3 protocol errors when the stream is cut
                if self._stop.is_set():
                    return
                log.info("pod watch interrupted (%s); restarting", type(exc).__name__)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
