"""What both SSH backends do the same way: one connection per host, made on first use, made again on the next
use after it died, with failures shared between threads and a backoff for background reconnects."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

from dbgfwd.errors import DbgfwdError, UnreachableError, UpstreamError

log = logging.getLogger("dbgfwd.ssh")

EXEC_OUTPUT_LIMIT = 8 << 20  # bytes a command on a host may print (probes print a few KiB)
RETRY_CAP_UNREACHABLE = 4.0
RETRY_CAP_REFUSED = 60.0
T = TypeVar("T")


class Reconnecting:
    """Base of a host connection. Subclasses set `settings` (with `alias`, `label`, `connect_timeout`)."""

    settings: object

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failure: tuple[float, DbgfwdError] | None = None
        self._closed = threading.Event()
        self.connects = 0  # successful connects so far (1 = never reconnected)
        self.failures = 0  # failed connects since the last success

    @property
    def last_error(self) -> DbgfwdError | None:
        return None if self._failure is None else self._failure[1]

    def _ensure(self, timeout: float | None, current: Callable[[], T | None], connect: Callable[[float], T]) -> T:
        """`current()` when it is up, else `connect(timeout)` under the lock, once for all waiting threads.
        Raises DbgfwdError subclasses."""
        up = current()
        if up is not None:
            return up
        if self._closed.is_set():
            raise UpstreamError(f"ssh connection to {self.settings.alias} is closed", retryable=False)
        timeout = self.settings.connect_timeout if timeout is None else timeout
        asked = time.monotonic()
        if not self._lock.acquire(timeout=max(timeout, 0.1)):
            raise UnreachableError(f"ssh: still connecting to {self.settings.label}",
                                   hint="the host is slow to answer; dbgfwd keeps trying")
        try:
            up = current()
            if up is not None:
                return up
            # Another thread failed while we waited for the lock: share its answer, don't stampede.
            if self._failure is not None and self._failure[0] >= asked:
                raise self._failure[1]
            try:
                up = connect(timeout)
            except DbgfwdError as exc:
                self._failure = (time.monotonic(), exc)
                self.failures += 1
                raise
            self._failure, self.failures = None, 0
            self.connects += 1
            if self.connects > 1:
                log.info("ssh: reconnected to %s", self.settings.alias)
            return up
        finally:
            self._lock.release()

    def next_attempt_at(self) -> float:
        """When a background reconnect should next be tried (monotonic): capped exponential backoff,
        short for an unreachable host (it may come back any second), long for auth/host key errors."""
        if self._failure is None:
            return 0.0
        when, exc = self._failure
        cap = RETRY_CAP_UNREACHABLE if isinstance(exc, UnreachableError) else RETRY_CAP_REFUSED
        return when + min(cap, 0.25 * 2 ** max(0, self.failures - 1))
