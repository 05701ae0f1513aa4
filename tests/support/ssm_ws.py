"""Server side of RFC 6455 for the test SSM service (written independently of dbgfwd's client).

Strict like the real endpoint: the upgrade must be a GET with the websocket headers, and every
client frame must be masked (RFC 6455 5.1); violations close the connection.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import threading

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class Closed(Exception):
    pass


class ProtocolViolation(Exception):
    pass


def read_upgrade(sock: socket.socket) -> tuple[str, dict[str, str]]:
    """Read the HTTP upgrade request; answer 101 or 400. Returns (path with query, headers)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise Closed("closed before upgrade")
        data += chunk
        if len(data) > 32768:
            raise ProtocolViolation("upgrade request too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    if rest:
        raise ProtocolViolation("client sent frames before the upgrade response")
    request_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
    method, path, _version = (request_line.split(" ") + ["", "", ""])[:3]
    ok = (method == "GET" and headers.get("upgrade", "").lower() == "websocket"
          and "upgrade" in headers.get("connection", "").lower()
          and headers.get("sec-websocket-version") == "13" and _valid_key(headers.get("sec-websocket-key")))
    if not ok:
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        raise ProtocolViolation(f"bad websocket upgrade: {request_line!r}")
    accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest()).decode()
    return path, headers | {"_accept": accept}


def _valid_key(key: str | None) -> bool:
    """RFC 6455 4.1: the key is 16 random bytes, base64-encoded."""
    try:
        return len(base64.b64decode(key or "", validate=True)) == 16
    except ValueError:
        return False


def accept(sock: socket.socket, accept_value: str) -> None:
    sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Accept: {accept_value}\r\n\r\n").encode())


def reject(sock: socket.socket, status: str) -> None:
    sock.sendall(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())


def _unmask(key: bytes, data: bytes) -> bytes:
    n = len(data)
    if not n:
        return data
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def server_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return struct.pack(">BB", 0x80 | opcode, n) + payload
    if n < 65536:
        return struct.pack(">BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack(">BBQ", 0x80 | opcode, 127, n) + payload


class ServerSocket:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.closed = False
        self.pings = 0

    def _need(self, n: int) -> bytes:
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(262144)
            except OSError:
                chunk = b""
            if not chunk:
                raise Closed("peer closed")
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def has_frame(self) -> bool:
        """A whole frame is buffered already (so acks can wait to be batched)."""
        buf = self.buf
        if len(buf) < 2:
            return False
        n, off = buf[1] & 0x7F, 2
        if n == 126:
            n, off = (int.from_bytes(buf[2:4], "big"), 4) if len(buf) >= 4 else (1 << 62, 4)
        elif n == 127:
            n, off = (int.from_bytes(buf[2:10], "big"), 10) if len(buf) >= 10 else (1 << 62, 10)
        return len(buf) >= off + 4 + n

    def recv(self) -> tuple[int, bytes]:
        parts, first_op = [], None
        while True:
            b0, b1 = self._need(2)
            if b0 & 0x70:
                raise ProtocolViolation("reserved websocket bits set")
            op, n = b0 & 0x0F, b1 & 0x7F
            if not b1 & 0x80:
                raise ProtocolViolation("client frame not masked")
            if n == 126:
                (n,) = struct.unpack(">H", self._need(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._need(8))
            key = self._need(4)
            payload = _unmask(key, self._need(n))
            if op >= 0x8 and (n > 125 or not b0 & 0x80):
                raise ProtocolViolation("control frame longer than 125 bytes or fragmented")  # RFC 6455 5.5
            if op == 0 and first_op is None:
                raise ProtocolViolation("continuation frame with nothing to continue")
            if op in (TEXT, BINARY) and first_op is not None:
                raise ProtocolViolation("new data frame inside a fragmented message")
            if op == PING:
                self.pings += 1
                self.send(PONG, payload)
                continue
            if op == PONG:
                continue
            if op == CLOSE:
                self.close()
                raise Closed("client sent close")
            if op not in (0, TEXT, BINARY):
                raise ProtocolViolation(f"unknown opcode {op}")
            if op != 0:
                first_op = op
            parts.append(payload)
            if b0 & 0x80:
                return first_op or BINARY, b"".join(parts)

    def send(self, opcode: int, payload: bytes) -> None:
        self.send_raw(server_frame(opcode, payload))

    def send_raw(self, data: bytes) -> None:
        with self.lock:
            if self.closed:
                raise Closed("closed")
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True
                raise Closed("send failed") from None

    def close(self, abrupt: bool = False, code: int = 1000) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            if not abrupt:
                try:
                    self.sock.sendall(server_frame(CLOSE, struct.pack(">H", code)))
                except OSError:
                    pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
