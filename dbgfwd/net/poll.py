"""Waiting for one descriptor to become readable (or writable), at any descriptor number."""

from __future__ import annotations

import math
import select


def readable(fd, timeout: float | None) -> bool:
    """True when `fd` (a socket, a file object or a number) has bytes, an end of file or an error to report
    within `timeout` seconds (None: however long that takes). select() refuses descriptors past FD_SETSIZE
    (1024), and an attach of many ranks holds more than that from its start (a listener each): poll() wherever
    there is one. Windows has none, and its select() has no such limit."""
    return _wait(fd, False, timeout)


def writable(fd, timeout: float | None) -> bool:
    """True when `fd` takes bytes (or has an error to report) within `timeout` seconds (None: no limit)."""
    return _wait(fd, True, timeout)


def _wait(fd, write: bool, timeout: float | None) -> bool:
    if timeout is not None:
        timeout = max(0.0, timeout)
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLOUT if write else select.POLLIN | select.POLLPRI)
        return bool(poller.poll(None if timeout is None else math.ceil(timeout * 1000)))
    if write:
        _, ready, _ = select.select([], [fd], [], timeout)
    else:
        ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)
