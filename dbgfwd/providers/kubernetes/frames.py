"""Websocket frames on an already-upgraded socket, for the port-forward data path.

websocket-client does the handshake (auth, TLS, proxies); after it, this codec reads with large
buffered recv()s instead of websocket-client's 16 KiB-at-a-time reads and masks outgoing payloads
without its extra copies. Sends share websocket-client's lock, so its pings never interleave.
"""

from __future__ import annotations

import os
import struct
import sys

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
READ_SIZE = 256 * 1024


class FrameError(ConnectionError):
    pass


def mask(key: bytes, data) -> bytes:
    n = len(data)
    if not n:
        return b""
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, sys.byteorder) ^ int.from_bytes(keys, sys.byteorder)).to_bytes(n, sys.byteorder)


def encode(opcode: int, payload) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    key = os.urandom(4)
    if n < 126:
        header = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + key + mask(key, payload)


class FrameReader:
    """Reads whole messages (opcode, payload) from a socket; answers pings through `pong`."""

    def __init__(self, sock, pong):
        self.sock = sock
        self._pong = pong
        self._buf = bytearray()

    @property
    def buffered(self) -> bool:
        return bool(self._buf) or bool(getattr(self.sock, "pending", lambda: 0)())

    def _fill(self, need: int) -> None:
        while len(self._buf) < need:
            chunk = self.sock.recv(READ_SIZE)
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
        self._fill(offset + length)
        payload = bytes(self._buf[offset:offset + length])
        del self._buf[:offset + length]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def message(self) -> tuple[int, bytes]:
        """The next data message, or (OP_CLOSE, b"") at a close frame. Raises OSError/EOFError."""
        parts: list[bytes] = []
        first = None
        while True:
            fin, opcode, payload = self._frame()
            if opcode == OP_PING:
                self._pong(payload)
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                return OP_CLOSE, b""
            if opcode != OP_CONT:
                first = opcode
            elif first is None:
                raise FrameError("continuation frame without a start")
            parts.append(payload)
            if fin:
                return first, parts[0] if len(parts) == 1 else b"".join(parts)
