"""RFC 6455 client-side frame codec shared by the websocket transports (Kubernetes, SSM).

Each transport does its own handshake (the Kubernetes one through the official client for auth,
TLS and proxies; the SSM one by hand); after it, both frame with this code: large buffered reads,
masking without per-byte Python loops, and strictness about what a server may send.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
from typing import Callable

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
READ_SIZE = 256 * 1024
MAX_MESSAGE = 64 * 1024 * 1024


class FrameError(ConnectionError):
    """The peer broke the websocket framing rules."""


class _RandomPool:
    """os.urandom in 64 KiB draws: a fresh mask key per frame without a syscall per frame."""

    def __init__(self) -> None:
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


def mask(key: bytes, data) -> bytes:
    """XOR `data` with the 4-byte `key` repeated (one big-int operation, not a loop)."""
    n = len(data)
    if not n:
        return b""
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, sys.byteorder) ^ int.from_bytes(pad, sys.byteorder)).to_bytes(n, sys.byteorder)


def close_frame(code: int = 1000) -> bytes:
    """A client close frame with status `code` (1000: normal closure)."""
    return encode_frame(OP_CLOSE, struct.pack(">H", code))


def encode_frame(opcode: int, payload) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = random_bytes(4)
    return head + key + mask(key, payload)


class FrameReader:
    """Reads whole server messages from `recv`; answers pings through `pong(payload)`.

    `message()` returns (opcode, payload) for data messages and (OP_CLOSE, payload) for a close
    frame. It raises EOFError when the byte stream ends, FrameError on framing violations (a masked
    server frame, a stray continuation, an oversized message), and whatever `recv` raises.
    """

    def __init__(self, recv: Callable[[int], bytes], pong: Callable[[bytes], None], leftover: bytes = b"",
                 max_message: int = MAX_MESSAGE):
        self._recv = recv
        self._pong = pong
        self._buf = bytearray(leftover)
        self._max = max_message

    @property
    def buffered(self) -> bool:
        return bool(self._buf)

    def has_frame(self) -> bool:
        """True when a complete frame is already buffered (message() would not block on it)."""
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
        return len(buf) >= off + n

    def _fill(self, need: int) -> None:
        while len(self._buf) < need:
            chunk = self._recv(READ_SIZE)
            if not chunk:
                raise EOFError("websocket connection ended")
            self._buf += chunk

    def _frame(self) -> tuple[bool, int, bytes]:
        self._fill(2)
        b0, b1 = self._buf[0], self._buf[1]
        if b1 & 0x80:
            raise FrameError("server frame is masked")
        length, offset = b1 & 0x7F, 2
        if length == 126:
            self._fill(4)
            (length,), offset = struct.unpack_from(">H", self._buf, 2), 4
        elif length == 127:
            self._fill(10)
            (length,), offset = struct.unpack_from(">Q", self._buf, 2), 10
        if length > self._max:
            raise FrameError(f"websocket frame of {length} bytes is too large")
        self._fill(offset + length)
        payload = bytes(self._buf[offset:offset + length])
        del self._buf[:offset + length]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def message(self) -> tuple[int, bytes]:
        parts: list[bytes] = []
        first = None
        size = 0
        while True:
            fin, opcode, payload = self._frame()
            if opcode == OP_PING:
                self._pong(payload)
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                return OP_CLOSE, payload
            if opcode != OP_CONT:
                if first is not None:
                    raise FrameError("new message started inside a fragmented one")
                first = opcode
            elif first is None:
                raise FrameError("continuation frame without a start")
            parts.append(payload)
            size += len(payload)
            if size > self._max:
                raise FrameError(f"websocket message of over {self._max} bytes")
            if fin:
                return first, parts[0] if len(parts) == 1 else b"".join(parts)
