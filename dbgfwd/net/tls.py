"""TLS connections that one thread reads while another writes.

OpenSSL forbids two calls on one connection at the same time, and CPython lets them happen: it releases the
GIL inside SSL_read and SSL_write. A thread waiting in SSL_read while another calls SSL_write breaks the
connection ("[SSL] internal error", or a corrupted stream; python/cpython#143756). dbgfwd's websocket streams
are used exactly so: the engine reads a port-forward or SSM stream while the debugger's requests, and the
keepalive pings, are written to it from other threads. Plain ws:// test servers never show it; every real API
server and SSM endpoint speaks TLS.

`SerialTLS` makes every SSL call non-blocking and under one lock, and waits for the descriptor outside it: a
reader waiting for data never holds up a writer, and no two SSL calls on the connection ever overlap.
"""

from __future__ import annotations

import errno
import socket
import ssl
import threading
import time

from dbgfwd.net.poll import readable, writable


class SerialTLS:
    """Wraps a connected (handshaken) `ssl.SSLSocket`; offers the socket calls dbgfwd and websocket-client make.

    Blocking calls keep their meaning (`settimeout` as on a socket: None waits for ever, a number raises
    `socket.timeout`); only the waiting moves out of OpenSSL into poll()."""

    def __init__(self, sock: ssl.SSLSocket):
        self._sock = sock
        self._lock = threading.Lock()
        self._timeout = sock.gettimeout()
        sock.setblocking(False)

    # ---- socket surface ----
    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def _closed(self) -> bool:  # websocket-client's shutdown() looks at it
        return self._sock._closed

    def gettimeout(self) -> float | None:
        return self._timeout

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def pending(self) -> int:
        with self._lock:
            return self._sock.pending()

    def recv(self, n: int) -> bytes:
        data = self._call(False, self._sock.recv, n)
        # A record already decrypted inside OpenSSL does not show on the descriptor: a caller that polls before
        # its next recv would wait past it. Hand it over now.
        while data and len(data) < n:
            with self._lock:
                if not self._sock.pending():
                    break
                try:
                    more = self._sock.recv(n - len(data))
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    break
            if not more:
                break
            data += more
        return data

    def send(self, data) -> int:
        return self._call(True, self._sock.send, data)

    def sendall(self, data) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            view = view[self.send(view):]

    def shutdown(self, how: int) -> None:
        """The TCP shutdown only (SSLSocket.shutdown would also drop the SSL object, and a later recv would read
        ciphertext as data). It wakes a thread waiting in recv or send here."""
        socket.socket.shutdown(self._sock, how)

    def close(self) -> None:
        try:
            self.shutdown(socket.SHUT_RDWR)  # close() alone wakes no thread waiting in poll() on this descriptor
        except OSError:
            pass
        with self._lock:
            self._sock.close()

    # ---- one SSL call at a time ----
    def _call(self, sending: bool, op, *args):
        timeout = self._timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if self._sock._closed:
                    raise OSError(errno.EBADF, "the TLS connection is closed")
                try:
                    return op(*args)
                except ssl.SSLWantReadError:  # also when sending: TLS may need the peer's bytes first
                    write = False
                except ssl.SSLWantWriteError:
                    write = True
                except BlockingIOError:
                    write = sending
            if timeout == 0:
                raise BlockingIOError("the TLS connection would block")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise socket.timeout("timed out")
            (writable if write else readable)(self, left)
