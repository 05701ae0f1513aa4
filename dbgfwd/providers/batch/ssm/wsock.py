"""A small RFC 6455 websocket client (binary/text messages, ping/pong, close) over TCP or TLS.

Written here rather than borrowed so the data channel controls batching (many frames per
`sendall`) and keepalive pings itself, with nothing but the standard library.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import socket
import ssl
import struct
import threading
from urllib.parse import urlsplit

from dbgfwd.net.tls import SerialTLS
from dbgfwd.net.wsframes import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameReader, close_frame, encode_frame  # noqa: F401

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 16 * 1024 * 1024


_CLOSE_WAIT = 0.5  # seconds close() gives a send in progress, and its own close frame


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """One for every connection: loading the system's CA store takes 30-40 ms of CPU, and each rank's stream is a
    connection of its own."""
    return ssl.create_default_context()


class WebSocketError(OSError):
    """The websocket failed or was closed (by either side)."""


class WebSocket:
    """A connected client websocket. `send*` are thread-safe; `recv` belongs to one reader thread."""

    def __init__(self, sock: socket.socket, leftover: bytes = b""):
        self._sock = sock
        self._reader = FrameReader(sock.recv, self._pong, leftover, max_message=MAX_MESSAGE)
        self._send_lock = threading.Lock()
        self.closed = False

    @classmethod
    def connect(cls, url: str, timeout: float = 10.0, headers: dict[str, str] | None = None) -> "WebSocket":
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss"):
            raise WebSocketError(f"not a websocket URL scheme: {parts.scheme!r}")
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        try:
            raw = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise WebSocketError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock: socket.socket = raw
        if parts.scheme == "wss":
            sock = _tls_context().wrap_socket(raw, server_hostname=host)
        key = base64.b64encode(os.urandom(16)).decode()
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                sock.close()
                raise WebSocketError(f"{host}:{port} closed the connection during the websocket upgrade")
            data += chunk
            if len(data) > 65536:
                sock.close()
                raise WebSocketError("websocket upgrade response too long")
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = status_line.split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            sock.close()
            # Only the status line: the URL's query (credentials) is never echoed.
            raise WebSocketError(f"websocket upgrade refused by {host}: {status_line.strip()}")
        got = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        expect = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        if got.get("sec-websocket-accept") != expect:
            sock.close()
            raise WebSocketError("websocket upgrade answered with a wrong Sec-WebSocket-Accept")
        sock.settimeout(None)
        if isinstance(sock, ssl.SSLSocket):  # one reader thread, several writers: see net/tls.py
            sock = SerialTLS(sock)
        return cls(sock, rest)

    # ---- sending ----
    def send_frames(self, frames: list[bytes]) -> None:
        """Send already-encoded frames (encode_frame) in one write."""
        with self._send_lock:
            if self.closed:
                raise WebSocketError("websocket is closed")
            try:
                self._sock.sendall(b"".join(frames))
            except OSError as exc:
                self.closed = True
                raise WebSocketError(f"websocket send failed: {exc}") from None

    def send_binary(self, payload: bytes) -> None:
        self.send_frames([encode_frame(OP_BINARY, payload)])

    def send_text(self, text: str) -> None:
        self.send_frames([encode_frame(OP_TEXT, text.encode())])

    def ping(self, payload: bytes = b"") -> None:
        self.send_frames([encode_frame(OP_PING, payload)])

    # ---- receiving ----
    def has_buffered_frame(self) -> bool:
        """True when a complete frame is already buffered (recv() would not block)."""
        return self._reader.has_frame()

    def _pong(self, payload: bytes) -> None:
        try:
            self.send_frames([encode_frame(OP_PONG, payload)])
        except WebSocketError:
            pass

    def recv(self) -> tuple[int, bytes]:
        """Next data message as (opcode, payload). Answers pings; raises WebSocketError on close."""
        try:
            op, payload = self._reader.message()
        except (OSError, EOFError) as exc:
            raise WebSocketError(f"websocket receive failed: {exc}") from None
        if op == OP_CLOSE:
            try:
                self.send_frames([encode_frame(OP_CLOSE, payload[:2])])
            except WebSocketError:
                pass
            self.close()
            code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
            raise WebSocketError(f"websocket closed by peer (code {code})")
        return op, payload

    def close(self) -> None:
        """Say goodbye when the socket can take it, and end the connection within a second either way: a
        peer that stopped reading leaves a sender blocked in sendall holding the send lock (the close
        frame is skipped then, and the shutdown below wakes that sender with an error)."""
        if self._send_lock.acquire(timeout=_CLOSE_WAIT):
            try:
                if not self.closed:
                    self.closed = True
                    try:
                        self._sock.settimeout(_CLOSE_WAIT)  # the close frame must not wait on a full buffer
                        self._sock.sendall(close_frame())
                    except OSError:
                        pass
            finally:
                self._send_lock.release()
        else:
            self.closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
