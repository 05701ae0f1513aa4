"""A small RFC 6455 websocket client (binary/text messages, ping/pong, close) over TCP or TLS.

Written here rather than borrowed so the data channel controls batching (many frames per
`sendall`) and keepalive pings itself, with nothing but the standard library.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
import struct
import threading
from urllib.parse import urlsplit

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 16 * 1024 * 1024


class WebSocketError(OSError):
    """The websocket failed or was closed (by either side)."""


class _RandomPool:
    """os.urandom in 64 KiB draws: a fresh mask key per frame without a syscall per frame."""

    def __init__(self):
        self._lock = threading.Lock()
        self._buf = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._pos + n > len(self._buf):
                self._buf, self._pos = os.urandom(65536), 0
            out = self._buf[self._pos:self._pos + n]
            self._pos += n
            return out


random_bytes = _RandomPool().take


def _mask(key: bytes, data: bytes) -> bytes:
    n = len(data)
    if not n:
        return data
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(pad, "little")).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = random_bytes(4)
    return head + key + _mask(key, payload)


class WebSocket:
    """A connected client websocket. `send*` are thread-safe; `recv` belongs to one reader thread."""

    def __init__(self, sock: socket.socket, leftover: bytes = b""):
        self._sock = sock
        self._buf = bytearray(leftover)
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
            sock = ssl.create_default_context().wrap_socket(raw, server_hostname=host)
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
        buf = self._buf
        if len(buf) < 2:
            return False
        n, off = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return False
            n, off = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                return False
            n, off = int.from_bytes(buf[2:10], "big"), 10
        if buf[1] & 0x80:
            off += 4
        return len(buf) >= off + n

    def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            try:
                chunk = self._sock.recv(262144)
            except OSError as exc:
                raise WebSocketError(f"websocket receive failed: {exc}") from None
            if not chunk:
                raise WebSocketError("websocket closed by peer")
            self._buf += chunk

    def _take(self, n: int) -> bytes:
        self._fill(n)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def recv(self) -> tuple[int, bytes]:
        """Next data message as (opcode, payload). Answers pings; raises WebSocketError on close."""
        parts: list[bytes] = []
        opcode = None
        while True:
            b0, b1 = self._take(2)
            fin, op, masked, n = b0 & 0x80, b0 & 0x0F, b1 & 0x80, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", self._take(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._take(8))
            if n > MAX_MESSAGE:
                raise WebSocketError(f"websocket frame of {n} bytes is too large")
            key = self._take(4) if masked else b""
            payload = self._take(n)
            if masked:
                payload = _mask(key, payload)
            if op == OP_PING:
                try:
                    self.send_frames([encode_frame(OP_PONG, payload)])
                except WebSocketError:
                    pass
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                try:
                    self.send_frames([encode_frame(OP_CLOSE, payload[:2])])
                except WebSocketError:
                    pass
                self.close()
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise WebSocketError(f"websocket closed by peer (code {code})")
            if op != OP_CONT:
                opcode = op
            parts.append(payload)
            if fin:
                return opcode if opcode is not None else OP_BINARY, b"".join(parts)

    def close(self) -> None:
        with self._send_lock:
            if not self.closed:
                self.closed = True
                try:
                    self._sock.sendall(encode_frame(OP_CLOSE, struct.pack(">H", 1000)))
                except OSError:
                    pass
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
