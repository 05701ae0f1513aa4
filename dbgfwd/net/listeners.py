"""Local listeners: bound on loopback, all accepted by one selector thread (idle listeners cost nothing)."""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import threading
import time
from typing import Callable

from dbgfwd import platform

log = logging.getLogger("dbgfwd.relay")


def client_gone(sock: socket.socket) -> bool:
    """True if the peer closed the connection, or shut down its side, even when bytes it sent are still
    unread (peeks, never consumes the client's bytes)."""
    if platform.peer_hung_up(sock):
        return True
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    return data == b""


def client_has_spoken(sock: socket.socket) -> bool:
    """True once the client has sent its first bytes (a DAP client's `initialize`): only then is an
    upstream opened for it. A port scanner's connect-and-close never reaches a rank."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError, OSError):
        return False


def wait_readable(sock: socket.socket, timeout: float) -> None:
    """Block until `sock` has bytes or a hang-up to report, or `timeout` passes."""
    from dbgfwd.net.poll import readable

    try:
        readable(sock, timeout)
    except (OSError, ValueError):
        pass


def bind_listener(host: str, port: int, backlog: int = 64) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Acceptor:
    """One thread accepting on every listener; hands each accepted socket to `on_accept(key, sock)`."""

    def __init__(self, on_accept: Callable[[object, socket.socket], None]):
        self._on_accept = on_accept
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._pending: list[tuple[socket.socket, object]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._starved = False
        self._thread = threading.Thread(target=self._loop, name="dbgfwd-acceptor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, sock: socket.socket, key: object) -> None:
        with self._lock:
            self._pending.append((sock, key))
        os.write(self._wake_w, b"x")

    def _apply(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for sock, key in pending:
            self._sel.register(sock, selectors.EVENT_READ, key)

    def _loop(self) -> None:
        while not self._stop:
            for skey, _ in self._sel.select():
                if skey.data is None:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    self._apply()
                    continue
                try:
                    conn, _ = skey.fileobj.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        # Out of descriptors: the pending connection stays queued and the listener readable,
                        # so retrying at once would spin. Back off; what is open closes meanwhile.
                        if not self._starved:
                            self._starved = True
                            log.warning("cannot accept connections: %s; backing off", exc.strerror or exc)
                        time.sleep(0.1)
                    else:
                        log.debug("accept failed: %s", exc)
                    continue
                self._starved = False
                conn.setblocking(True)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._on_accept(skey.data, conn)

    def stop(self) -> None:
        """Stop accepting; idempotent (the wake pipe's numbers may belong to other files afterwards)."""
        with self._lock:
            if self._stop:
                return
            self._stop = True
        os.write(self._wake_w, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._thread.is_alive():
            # Still in select(): closing its fds under it could hand them to other files. Leave them;
            # the daemon thread exits at its next wake-up and the process reclaims the rest.
            log.warning("acceptor thread did not stop; leaving its descriptors open")
            return
        self._sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
