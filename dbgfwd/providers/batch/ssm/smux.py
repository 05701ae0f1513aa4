"""smux v1 client streams over the data channel's byte stream: one stream per local connection.

Frame: ver=1 | cmd (0 SYN, 1 FIN, 2 PSH, 3 NOP) | length u16 LE | stream id u32 LE | data.
Client stream ids are odd and start at 3. Each stream is handed to the engine as one end of a
`socket.socketpair()`; two threads per stream pump the other end (local -> PSH frames, and
received PSH data -> local, through a queue so a slow local reader never stalls the channel).
"""

from __future__ import annotations

import logging
import queue
import socket
import struct
import threading
from typing import Callable

log = logging.getLogger("dbgfwd.batch.ssm")

VERSION = 1
SYN, FIN, PSH, NOP = 0, 1, 2, 3
_HDR = struct.Struct("<BBHI")
MAX_DATA = 65535
READ_SIZE = 32768


class SmuxError(Exception):
    """The agent sent bytes that are not smux v1."""


def frame(cmd: int, sid: int, data: bytes = b"") -> bytes:
    return _HDR.pack(VERSION, cmd, len(data), sid) + data


class _Stream:
    def __init__(self, mux: "SmuxClient", sid: int, sock: socket.socket):
        self.mux, self.sid, self.sock = mux, sid, sock
        self.inbox: "queue.Queue[bytes | None]" = queue.Queue()
        self.local_fin = False
        self.remote_fin = False
        self.lock = threading.Lock()

    def start(self) -> None:
        for fn, name in ((self._pump_out, "out"), (self._pump_in, "in")):
            threading.Thread(target=fn, name=f"dbgfwd-smux-{self.sid}-{name}", daemon=True).start()

    def _pump_out(self) -> None:
        """Local bytes -> PSH frames; local EOF -> FIN."""
        try:
            while True:
                data = self.sock.recv(READ_SIZE)
                if not data:
                    break
                self.mux.send(frame(PSH, self.sid, data))
        except OSError:
            pass
        except Exception as exc:  # the channel closed under us
            log.debug("smux stream %d: %s", self.sid, exc)
            self.abort()
            return
        with self.lock:
            self.local_fin = True
            done = self.remote_fin
        try:
            self.mux.send(frame(FIN, self.sid))
        except Exception:
            pass
        if done:
            self.mux.forget(self)

    def _pump_in(self) -> None:
        """Received PSH data -> local socket; FIN -> half-close towards the engine."""
        while True:
            data = self.inbox.get()
            if data is None:
                try:
                    self.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                with self.lock:
                    self.remote_fin = True
                    done = self.local_fin
                if done:
                    self.mux.forget(self)
                return
            try:
                self.sock.sendall(data)
            except OSError:
                self.abort()
                return

    def abort(self) -> None:
        self.inbox.put(None)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class SmuxClient:
    """Client side of an smux v1 session. `send(bytes)` writes into the data channel."""

    def __init__(self, send: Callable[[bytes], None]):
        self.send = send
        self._lock = threading.Lock()
        self._next_id = 1
        self._streams: dict[int, _Stream] = {}
        self._buf = bytearray()
        self.closed = False

    def open(self) -> socket.socket:
        """A new stream (SYN sent); returns the engine's end of its socketpair."""
        ours, theirs = socket.socketpair()
        with self._lock:
            if self.closed:
                ours.close()
                theirs.close()
                raise SmuxError("session closed")
            self._next_id += 2
            stream = _Stream(self, self._next_id, ours)
            self._streams[stream.sid] = stream
        self.send(frame(SYN, stream.sid))
        stream.start()
        return theirs

    def forget(self, stream: _Stream) -> None:
        with self._lock:
            self._streams.pop(stream.sid, None)
        try:
            stream.sock.close()
        except OSError:
            pass

    def nop(self) -> None:
        self.send(frame(NOP, 0))

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._streams)

    def feed(self, data: bytes) -> None:
        """Bytes of the agent's smux stream, in order, split anywhere."""
        buf = self._buf
        buf += data
        while len(buf) >= _HDR.size:
            ver, cmd, length, sid = _HDR.unpack_from(buf)
            if ver != VERSION or cmd > NOP:
                raise SmuxError(f"bad smux frame header (version {ver}, command {cmd})")
            end = _HDR.size + length
            if len(buf) < end:
                break
            payload = bytes(buf[_HDR.size:end])
            del buf[:end]
            with self._lock:
                stream = self._streams.get(sid)
            if stream is None:
                continue  # a stream we already closed, or NOP
            if cmd == PSH and payload:
                stream.inbox.put(payload)
            elif cmd == FIN:
                stream.inbox.put(None)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            streams = list(self._streams.values())
        for stream in streams:
            stream.abort()
