"""Waiting for one descriptor to become readable, at any descriptor number."""

from __future__ import annotations

import math
import select


def readable(fd, timeout: float) -> bool:
    """True when `fd` (a socket, a file object or a number) has bytes, an end of file or an error to report
    within `timeout` seconds. select() refuses descriptors past FD_SETSIZE (1024), and an attach of many ranks
    holds more than that from its start (a listener each): poll() wherever there is one. Windows has none, and
    its select() has no such limit."""
    timeout = max(0.0, timeout)
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(math.ceil(timeout * 1000)))
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)
