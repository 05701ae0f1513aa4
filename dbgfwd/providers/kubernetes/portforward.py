"""The v4 port-forward channel protocol, as a socket-like Stream the engine pumps directly.

One websocket per stream, one port per websocket: data on channel 0, errors on channel 1. The
server first sends each channel's port as a little-endian uint16; those prefixes are consumed here.
The stream reads the websocket in the engine's own recv thread and writes frames from its sendall
thread, so no socketpair and no pump threads sit in between (see bench/bench_k8s.py).
"""

from __future__ import annotations

import base64
import binascii
import logging
import socket
import struct
import threading
import time

from dbgfwd.errors import UpstreamError
from dbgfwd.net import wsframes as frames
from dbgfwd.net.poll import readable
from dbgfwd.providers.kubernetes.wsconnect import V4_BASE64

log = logging.getLogger("dbgfwd.providers.kubernetes")

DATA, ERROR = 0, 1
# How long open() waits for a first data or error frame after the prefixes, so a refused connect
# in the pod becomes a retryable error instead of a connection that closes at once. debugpy talks
# first (output events), so a live rank ends the wait immediately.
FIRST_FRAME_GRACE = 0.25


class PortForwardStream:
    """A byte stream to one port of one pod over a v4 portforward websocket."""

    def __init__(self, ws, port: int, pod: str):
        self._ws = ws
        self.port = port
        self.pod = pod
        self._b64 = ws.subprotocol == V4_BASE64
        self._reader = ws.reader  # holds what came with the upgrade's answer (often the port prefixes)
        self._send_lock = ws.lock  # the websocket's own: its pongs and our frames never interleave
        self._buf = b""
        self._prefixes: set[int] = set()
        self.error: str | None = None
        self._closed = False
        self._eof = False
        self._cut = False  # the transport ended without a close frame (or after an error)
        self._close_lock = threading.Lock()
        self.last_activity = time.monotonic()

    # ---- opening ----

    def wait_ready(self, timeout: float, grace: float = FIRST_FRAME_GRACE) -> None:
        """Consume the port prefixes, then wait up to `grace` for a first frame; raise on an error."""
        deadline = time.monotonic() + timeout
        grace_end = None
        while not self._eof and not self._buf and self.error is None:
            now = time.monotonic()
            if len(self._prefixes) == 2:
                grace_end = grace_end or now + grace
                if now >= grace_end:
                    break
                wait = grace_end - now
            else:
                if now >= deadline:
                    self.close()
                    raise UpstreamError(f"pod {self.pod}: no port-forward answer for port {self.port} "
                                        f"within {timeout:.0f}s", retryable=True)
                wait = deadline - now
            if not self._readable(wait):
                continue
            self._read_frame()
        if self.error is not None:
            self.close()
            raise UpstreamError(f"pod {self.pod} port {self.port}: {self.error}",
                                hint="nothing listens there yet; the rank may still be starting",
                                retryable=True)
        if self._eof and not self._buf:
            self.close()
            raise UpstreamError(f"pod {self.pod}: port-forward to port {self.port} closed at once",
                                retryable=True)

    def _readable(self, wait: float) -> bool:
        sock = self._ws.sock
        if self._reader.buffered or (hasattr(sock, "pending") and sock.pending()):
            return True
        try:
            return readable(sock, wait)
        except (OSError, ValueError):
            self._eof = True
            return False

    # ---- frames ----

    def _read_frame(self) -> None:
        """Read one websocket message and file it (data -> buffer, error -> self.error)."""
        try:
            opcode, payload = self._reader.message()
        except (OSError, EOFError, AttributeError, ValueError):
            self._eof = True
            self._cut = not self._closed
            return
        if opcode == frames.OP_CLOSE:
            self._eof = True
            self._send_close_frame()  # answer the server's close
            return
        if self._b64:
            if not payload:
                return
            try:
                channel, payload = payload[0] - 0x30, base64.b64decode(payload[1:], validate=True)
            except (ValueError, binascii.Error):
                self.error = "protocol error: a frame that is not base64 on the base64 subprotocol"
                self._eof = True
                return
        else:
            if not payload:
                return
            channel, payload = payload[0], payload[1:]
        self.last_activity = time.monotonic()
        if channel not in self._prefixes:
            if len(payload) != 2:
                self.error = f"protocol error: channel {channel} opened without a port prefix"
                self._eof = True
                return
            (port,) = struct.unpack("<H", payload)
            if port != self.port:
                self.error = f"protocol error: channel {channel} is for port {port}, not {self.port}"
                self._eof = True
                return
            self._prefixes.add(channel)
            return
        if channel == DATA:
            self._buf += payload
        elif channel == ERROR:
            text = payload.decode("utf-8", "replace").strip()
            if text:
                self.error = (self.error + "; " if self.error else "") + text
                log.info("pod %s port %d: %s", self.pod, self.port, text)
                self._eof = self._cut = True  # the kubelet closes after an error; do not wait for it

    # ---- Stream interface ----

    def recv(self, n: int) -> bytes:
        while not self._buf:
            if self._eof or self._closed:
                if self._cut and not self._closed:
                    # A cut is not an end: the relay must close the client, not half-close it,
                    # so a debugger never mistakes a truncated stream for a finished one.
                    raise ConnectionResetError(f"port-forward to pod {self.pod} was cut"
                                               + (f": {self.error}" if self.error else ""))
                return b""
            self._read_frame()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def sendall(self, data: bytes) -> None:
        if self._closed or self._eof:
            raise BrokenPipeError(f"port-forward to pod {self.pod} is closed")
        if self._b64:
            frame = frames.encode_frame(frames.OP_TEXT, b"0" + base64.b64encode(data))
        else:
            frame = frames.encode_frame(frames.OP_BINARY, b"\x00" + data)
        try:
            with self._send_lock:
                self._ws.sock.sendall(frame)
        except (OSError, AttributeError) as exc:
            self._eof = True
            raise BrokenPipeError(f"port-forward to pod {self.pod} broke: {type(exc).__name__}") from None
        self.last_activity = time.monotonic()

    def ping(self) -> None:
        """A websocket ping, so idle streams (a rank at a breakpoint) survive idle timeouts."""
        if self._closed or self._eof:
            return
        # Called from the engine's monitor thread: never wait behind a writer (a busy stream
        # needs no ping anyway).
        if not self._send_lock.acquire(timeout=0.05):
            return
        try:
            self._ws.sock.sendall(frames.encode_frame(frames.OP_PING, b"dbgfwd"))
        except (OSError, AttributeError):
            self._eof = True
        finally:
            self._send_lock.release()

    def shutdown(self, how: int) -> None:
        # The protocol has no half-close: a finished writer ends the whole stream. A close frame
        # lets the server flush and close; readers see EOF when its close frame comes back.
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            self._send_close_frame()
        if how in (socket.SHUT_RD, socket.SHUT_RDWR):
            self._abort()

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._send_close_frame()
        self._abort()

    def _send_close_frame(self) -> None:
        self._ws.send_close(0.2)

    def _abort(self) -> None:
        self._eof = True
        if self._closed:
            self._ws.abort()
            return
        try:
            self._ws.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader; close() ends the rest
        except OSError:
            pass

    @property
    def alive(self) -> bool:
        return not (self._closed or self._eof)
