"""Byte relays and listeners: the data path of every forward, whatever the provider.

A relay copies bytes both ways between a local client socket and an upstream Stream with one
blocking thread per direction: blocking sendall gives back-pressure for free, EOF on one side
becomes a half-close (shutdown(SHUT_WR)) on the other, and an error on either side closes both.
Idle relays cost nothing (threads parked in recv); idle listeners cost nothing (one selector thread).
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Callable

log = logging.getLogger("dbgfwd.net.relay")

BUFFER_SIZE = 256 * 1024
# After one side closed its half, how long the other direction may sit idle before both are closed.
# Some transports (Kubernetes port-forward websockets) have no half-close, so without this a relay
# whose client left could wait forever on an upstream that never answers EOF.
HALF_CLOSE_LINGER = 10.0


class Counters:
    """Bytes moved by one relay; read by status snapshots (plain ints: updates are GIL-atomic enough)."""

    __slots__ = ("up", "down")

    def __init__(self) -> None:
        self.up = 0  # client -> rank
        self.down = 0  # rank -> client


def _shutdown_write(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except (OSError, EOFError, AttributeError):
        pass


def _close(sock) -> None:
    try:
        sock.close()
    except (OSError, EOFError):
        pass


def _copy(src, dst, counters: Counters, attr: str, buffer_size: int) -> bool:
    """Copy until EOF (True) or error (False)."""
    recv_into = getattr(src, "recv_into", None)
    try:
        # The zero-copy path reuses one buffer, so it is only safe when the destination is a real
        # socket (sendall has copied into the kernel when it returns). A provider's own stream may
        # keep what it is handed (queue it, slice it lazily): it gets immutable bytes instead.
        if recv_into is not None and isinstance(src, socket.socket) and isinstance(dst, socket.socket):
            buf = bytearray(buffer_size)
            view = memoryview(buf)
            while True:
                n = recv_into(buf)
                if not n:
                    return True
                dst.sendall(view[:n])
                setattr(counters, attr, getattr(counters, attr) + n)
        else:
            while True:
                data = src.recv(buffer_size)
                if not data:
                    return True
                dst.sendall(data)
                setattr(counters, attr, getattr(counters, attr) + len(data))
    except (OSError, EOFError, ValueError) as exc:
        log.debug("relay %s stopped: %s", attr, exc)
        return False


class Relay:
    """Pumps one client <-> upstream pair until both directions are done; then closes both."""

    def __init__(self, client: socket.socket, upstream, on_done: Callable[["Relay"], None] | None = None,
                 buffer_size: int = BUFFER_SIZE, name: str = "relay", linger: float = HALF_CLOSE_LINGER):
        self.client = client
        self.upstream = upstream
        self.counters = Counters()
        self._on_done = on_done
        self._buffer_size = buffer_size
        self._name = name
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._remaining = 2
        self._linger = linger

    def run(self) -> None:
        """Run in the calling thread (client -> upstream) plus one helper thread (upstream -> client)."""
        t = threading.Thread(target=self._direction, args=(self.upstream, self.client, "down"),
                             name=f"{self._name}-down", daemon=True)
        t.start()
        self._direction(self.client, self.upstream, "up")
        t.join()

    def _direction(self, src, dst, attr: str) -> None:
        clean = _copy(src, dst, self.counters, attr, self._buffer_size)
        if clean:
            _shutdown_write(dst)
        else:
            self.close()
        with self._lock:
            self._remaining -= 1
            last = self._remaining == 0
        if last:
            self.close()
        elif clean:
            self._arm_linger(self._progress())

    def _progress(self) -> int:
        return self.counters.up + self.counters.down

    def _arm_linger(self, seen: int) -> None:
        def check() -> None:
            if self.closed:
                return
            now = self._progress()
            if now == seen:
                log.debug("%s: other direction idle %.0fs after half-close; closing", self._name, self._linger)
                self.close()
            else:
                self._arm_linger(now)

        timer = threading.Timer(self._linger, check)
        timer.daemon = True
        timer.start()

    def close(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
        # shutdown first: it wakes a thread blocked in recv on the same socket, close alone may not
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except (OSError, EOFError, AttributeError):
                pass
            _close(sock)
        if self._on_done:
            self._on_done(self)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()
