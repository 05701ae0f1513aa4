"""Byte relays and listeners: the data path of every forward, whatever the provider.

A relay copies bytes both ways between a local client socket and an upstream Stream with one
blocking thread per direction: blocking sendall gives back-pressure for free, EOF on one side
becomes a half-close (shutdown(SHUT_WR)) on the other, and an error on the upstream closes both.
Idle relays cost nothing (threads parked in recv); idle listeners cost nothing (one selector thread).

A client that vanishes (EOF or reset: the debugger crashed, the laptop slept) is never passed on to the
rank as a vanished client: debugpy's adapter (1.8.x) exits for good, taking the rank's debug port with
it, when its client's connection ends while a request is still unanswered (docs/debugpy.md). When the
client's bytes were whole DAP messages, the relay detaches for it instead (a `disconnect` request that
leaves the debuggee running), drops whatever the adapter still sends, and closes when the adapter ends
the session (or stays idle for `linger` seconds). Other protocols get a half-close.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Callable

from dbgfwd.net.dapframes import DapFramer, DapRewriter, InFlight, disconnect_message

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


def _close_client(sock) -> None:
    """Stop reading a client that is gone (wakes the other direction's recv), without closing its fd
    under that thread: close() does that once both directions are done."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, EOFError, AttributeError):
        pass


def _close(sock) -> None:
    try:
        sock.close()
    except (OSError, EOFError):
        pass


SRC_EOF, SRC_ERROR, DST_ERROR = "eof", "source error", "destination error"


def _copy(src, dst, counters: Counters, attr: str, buffer_size: int, watch=None, transform=None) -> str:
    """Copy until the source ends (SRC_EOF), fails (SRC_ERROR) or the destination fails (DST_ERROR).
    `dst` None: read and drop (the client is gone; the upstream is drained). `watch` sees each chunk;
    `transform` (when given) turns each chunk into what is sent on."""
    recv_into = getattr(src, "recv_into", None)
    # The zero-copy path reuses one buffer, so it is only safe when the destination is a real
    # socket (sendall has copied into the kernel when it returns). A provider's own stream may
    # keep what it is handed (queue it, slice it lazily): it gets immutable bytes instead.
    zero_copy = recv_into is not None and isinstance(src, socket.socket) and \
        (dst is None or isinstance(dst, socket.socket))
    buf = bytearray(buffer_size) if zero_copy else None
    view = memoryview(buf) if buf is not None else None
    while True:
        try:
            if zero_copy:
                n = recv_into(buf)
                data = view[:n]
            else:
                data = src.recv(buffer_size)
                n = len(data)
        except (OSError, EOFError, ValueError) as exc:
            log.debug("relay %s: source stopped: %s", attr, exc)
            return SRC_ERROR
        if not n:
            return SRC_EOF
        if watch is not None:
            watch(data)
        if transform is not None:
            data = transform(data)
        if dst is not None and len(data):
            try:
                dst.sendall(data)
            except (OSError, EOFError, ValueError) as exc:
                log.debug("relay %s: destination stopped: %s", attr, exc)
                return DST_ERROR
        setattr(counters, attr, getattr(counters, attr) + n)


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
        # DAP awareness, for a client that vanishes: where its messages end, and which of its requests
        # the adapter has yet to answer (detach only once none is left).
        self._inflight = InFlight()
        self._framer = DapRewriter(self._inflight.client_message)
        self._answers = DapFramer(self._inflight.adapter_message)
        self._detach: threading.Thread | None = None
        self._stop_push: Callable[[], None] | None = None

    def run(self) -> None:
        """Run in the calling thread (client -> upstream) plus one helper thread (upstream -> client).

        An upstream with `push_to(client, on_sent)` may write what it receives to the client itself, from the
        thread that receives it (the SSH provider's channels do, see dbgfwd.providers.ssh.direct): the helper
        thread then sends only what the client did not take at once. `push_to` returns the function that stops
        it, called before the client is given up or closed."""
        push_to = getattr(self.upstream, "push_to", None)
        if push_to is not None:
            self._stop_push = push_to(self.client, self._pushed)
        t = threading.Thread(target=self._direction, args=(self.upstream, self.client, "down"),
                             name=f"{self._name}-down", daemon=True)
        t.start()
        self._direction(self.client, self.upstream, "up")
        t.join()

    def _pushed(self, data) -> None:
        """Bytes the upstream wrote to the client itself (see run)."""
        self._answers.feed(data)
        self.counters.down += len(data)

    def _no_more_push(self) -> None:
        stop, self._stop_push = self._stop_push, None
        if stop is not None:
            stop()

    def _direction(self, src, dst, attr: str) -> None:
        if attr == "up":  # the client's requests, whole and made safe for the ranks (see DapRewriter)
            watch, transform = None, self._framer.feed
        else:
            watch, transform = self._answers.feed, None
        outcome = _copy(src, dst, self.counters, attr, self._buffer_size, watch, transform)
        clean = True
        if attr == "up" and outcome != DST_ERROR:
            # The client ended (EOF) or vanished (reset): detach for it, or half-close; never slam.
            self._client_gone(dst)
        elif attr == "down" and outcome == DST_ERROR:
            # The client is gone while the rank still talks: drain the upstream until it is done.
            self._no_more_push()
            _close_client(self.client)
            outcome = _copy(src, None, self.counters, attr, self._buffer_size, watch)
            clean = outcome == SRC_EOF
        elif outcome == SRC_EOF:
            _shutdown_write(dst)
        else:
            clean = False  # the upstream failed: nothing left to protect
        if not clean:
            self.close()
        with self._lock:
            self._remaining -= 1
            last = self._remaining == 0
        if last:
            self.close()
        elif clean:
            self._arm_linger(self._progress())

    def _client_gone(self, upstream) -> None:
        """Detach for a vanished DAP client once the adapter has answered its last request (bounded by
        `linger`); anything else gets a half-close. A client that detached itself gets nothing more: the
        adapter ends the session and closes its side on its own, and a second `disconnect` could reach it after
        it had closed the client's stream (debugpy 1.8's adapter then exits: docs/debugpy.md, 4)."""
        if self._framer.detached:
            return
        if not self._framer.at_boundary:
            _shutdown_write(upstream)
            return
        deadline = time.monotonic() + self._linger
        while self._inflight.pending and not self.closed and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.closed:
            return
        try:
            upstream.sendall(disconnect_message())
        except (OSError, EOFError, ValueError):
            _shutdown_write(upstream)

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
        self._no_more_push()  # before the client's socket closes: its number may be reused at once
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
