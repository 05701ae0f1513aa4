"""Server side of RFC 6455 websockets, strict, for the test apiserver (tests/support/k8s_server.py).

Strict where the real server (Go's gorilla/x-net websocket behind the apiserver and kubelet) is:
client frames must be masked, control frames short and unfragmented, reserved bits clear.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import threading

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class ProtocolViolation(Exception):
    pass


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def handshake_problem(headers) -> str | None:
    """Why these request headers are not a valid websocket upgrade (None when they are)."""
    if "websocket" not in (headers.get("Upgrade") or "").lower():
        return "Upgrade request required"
    if "upgrade" not in (headers.get("Connection") or "").lower():
        return "Upgrade request required"
    if headers.get("Sec-WebSocket-Version") != "13":
        return "unsupported websocket version"
    key = headers.get("Sec-WebSocket-Key") or ""
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return "bad Sec-WebSocket-Key"
    except ValueError:
        return "bad Sec-WebSocket-Key"
    return None


class ServerWebSocket:
    """One accepted websocket. recv_message() returns (opcode, payload) of data messages, answers
    pings itself and returns (OP_CLOSE, b"") at the end. send() is thread-safe."""

    def __init__(self, sock: socket.socket, rfile=None):
        self.sock = sock
        self.rfile = rfile or sock.makefile("rb", buffering=0)
        self._send_lock = threading.Lock()
        self.closed = False
        self.pings_received = 0
        self.violation: str | None = None

    def _read_exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.rfile.read(n - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return out

    def _read_frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._read_exact(2)
        fin, rsv, opcode = bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F
        masked, length = bool(b1 & 0x80), b1 & 0x7F
        if rsv:
            raise ProtocolViolation("reserved bits set without an extension")
        if not masked:
            raise ProtocolViolation("client frame not masked")
        if length == 126:
            (length,) = struct.unpack(">H", self._read_exact(2))
        elif length == 127:
            (length,) = struct.unpack(">Q", self._read_exact(8))
        if opcode >= 0x8 and (length > 125 or not fin):
            raise ProtocolViolation("control frame too long or fragmented")
        if opcode not in (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG):
            raise ProtocolViolation(f"unknown opcode {opcode}")
        mask = self._read_exact(4)
        data = self._read_exact(length)
        return fin, opcode, _unmask(data, mask)

    def recv_message(self) -> tuple[int, bytes]:
        parts: list[bytes] = []
        first_op = None
        while True:
            try:
                fin, opcode, data = self._read_frame()
            except (EOFError, OSError, ValueError):
                self.closed = True
                return OP_CLOSE, b""
            except ProtocolViolation as exc:
                self.violation = str(exc)
                self.close(1002, str(exc))
                return OP_CLOSE, b""
            if opcode == OP_PING:
                self.pings_received += 1
                self.send(data, OP_PONG)
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                self.close(1000)
                return OP_CLOSE, b""
            if opcode == OP_CONT:
                if first_op is None:
                    self.violation = "continuation frame without a start"
                    self.close(1002)
                    return OP_CLOSE, b""
            else:
                if first_op is not None:
                    self.violation = "new message inside a fragmented one"
                    self.close(1002)
                    return OP_CLOSE, b""
                first_op = opcode
            parts.append(data)
            if fin:
                return first_op, b"".join(parts)

    def send(self, payload: bytes, opcode: int = OP_BINARY) -> None:
        n = len(payload)
        if n < 126:
            header = struct.pack(">BB", 0x80 | opcode, n)
        elif n < 65536:
            header = struct.pack(">BBH", 0x80 | opcode, 126, n)
        else:
            header = struct.pack(">BBQ", 0x80 | opcode, 127, n)
        with self._send_lock:
            if self.closed and opcode != OP_CLOSE:
                raise BrokenPipeError("websocket closed")
            self.sock.sendall(header + payload)

    def ping(self, payload: bytes = b"") -> None:
        self.send(payload, OP_PING)

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        try:
            self.send(struct.pack(">H", code) + reason.encode()[:120], OP_CLOSE)
        except OSError:
            pass
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def kill(self) -> None:
        """Drop the TCP connection without a close frame (a load balancer cutting the stream)."""
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _unmask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return data
    n = len(data)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


def random_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()
