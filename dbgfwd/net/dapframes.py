"""Just enough of DAP's framing to know where one message ends and the next begins.

The relay watches the client's bytes through `DapFramer` (header parsing only; bodies are skipped by
length, never copied or decoded) so that, when the client vanishes, it knows whether the upstream is at
a message boundary, where a message of dbgfwd's own (`disconnect_message`) can be put without corrupting
the stream. Anything that does not start like a DAP header is "not DAP": the framer then stays out.
"""

from __future__ import annotations

import json
import re

_HEADER = b"content-length"
_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.I)
MAX_HEADER = 4096
# The seq of dbgfwd's own requests: far above what a debugger's session reaches.
OWN_SEQ = 2 ** 31 - 1


class DapFramer:
    """Splits a byte stream into DAP messages; `on_message(body)` gets each whole body (bytes)."""

    def __init__(self, on_message=None) -> None:
        self.is_dap: bool | None = None  # None: not known yet (nothing seen)
        self._header = bytearray()
        self._body = bytearray()
        self._body_left = 0
        self._on_message = on_message

    @property
    def at_boundary(self) -> bool:
        """True when the bytes seen so far are whole DAP messages (at least one)."""
        return self.is_dap is True and self._body_left == 0 and not self._header

    def feed(self, data) -> None:
        if self.is_dap is False:
            return
        view = memoryview(data)
        while len(view):
            if self._body_left:
                take = min(self._body_left, len(view))
                self._body_left -= take
                if self._on_message is not None:
                    self._body += view[:take]
                    if not self._body_left:
                        body, self._body = bytes(self._body), bytearray()
                        self._on_message(body)
                view = view[take:]
                continue
            end = _find_end(self._header, view)
            if end < 0:
                self._header += view
                if len(self._header) > MAX_HEADER or not _plausible(self._header):
                    self.is_dap = False
                return
            self._header += view[:end]
            view = view[end:]
            m = _LENGTH.search(self._header)
            if not m or not _plausible(self._header):
                self.is_dap = False
                return
            self.is_dap = True
            self._body_left = int(m.group(1))
            self._header = bytearray()


def _find_end(header: bytearray, view: memoryview) -> int:
    """Index in `view` just past the blank line ending a header that started in `header` (-1: not yet)."""
    tail = bytes(header[-3:]) + bytes(view[:MAX_HEADER])
    at = tail.find(b"\r\n\r\n")
    if at < 0:
        return -1
    return at + 4 - min(3, len(header))


def _plausible(header: bytearray) -> bool:
    """Does it start like a DAP header ("Content-Length: ...")?"""
    start = bytes(header[:len(_HEADER)]).lower()
    return _HEADER.startswith(start) if len(start) < len(_HEADER) else start == _HEADER


_SEQ = re.compile(rb'"seq"\s*:\s*(\d+)')
_REQUEST_SEQ = re.compile(rb'"request_seq"\s*:\s*(\d+)')
_TYPE = re.compile(rb'"type"\s*:\s*"(\w+)"')


class InFlight:
    """The client's requests the adapter has not answered yet: the relay detaches for a vanished client
    only once none is left (debugpy's adapter exits when it cannot deliver an answer)."""

    def __init__(self) -> None:
        self.pending: set[int] = set()

    def client_message(self, body: bytes) -> None:
        kind, seq = _TYPE.search(body), _SEQ.search(body)
        if kind and seq and kind.group(1) == b"request":
            self.pending.add(int(seq.group(1)))

    def adapter_message(self, body: bytes) -> None:
        kind, seq = _TYPE.search(body), _REQUEST_SEQ.search(body)
        if kind and seq and kind.group(1) == b"response":
            self.pending.discard(int(seq.group(1)))


class DapRewriter:
    """The client's side of a DAP stream, message by message, made safe for the ranks: a `disconnect` that
    asks to terminate the debuggee, or a `terminate` request, becomes a plain detach. Stopping one rank's
    session (or a compound with stopAll) must never kill a rank of a distributed job, whatever the adapter
    claims to support. Anything that is not DAP passes through untouched.

    `feed(data)` returns the bytes to send on: whole messages only (a partial one waits for its end)."""

    def __init__(self, on_message=None) -> None:
        self.is_dap: bool | None = None
        self._buf = bytearray()
        self._on_message = on_message
        self.rewritten = 0
        self.detached = False  # the client has sent its own `disconnect` (or a `terminate`, sent on as one)

    @property
    def at_boundary(self) -> bool:
        return self.is_dap is True and not self._buf

    def feed(self, data) -> bytes:
        if self.is_dap is False:
            return bytes(data)
        self._buf += data
        out = bytearray()
        while self._buf:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEADER or not _plausible(self._buf):
                    return self._give_up(out)
                break
            header = bytes(self._buf[:end])
            m = _LENGTH.search(header)
            if not m or not _plausible(self._buf):
                return self._give_up(out)
            self.is_dap = True
            total = end + 4 + int(m.group(1))
            if len(self._buf) < total:
                break
            body = bytes(self._buf[end + 4:total])
            del self._buf[:total]
            body = self._safe(body)
            if self._on_message is not None:
                self._on_message(body)
            out += frame(body)
        return bytes(out)

    def _give_up(self, out: bytearray) -> bytes:
        self.is_dap = False
        out += self._buf
        self._buf = bytearray()
        return bytes(out)

    def _safe(self, body: bytes) -> bytes:
        if b'"disconnect"' not in body and b'"terminate"' not in body:
            return body  # the common case: no parsing at all
        try:
            msg = json.loads(body)
        except ValueError:
            return body
        if not isinstance(msg, dict) or msg.get("type") != "request":
            return body
        if msg.get("command") in ("disconnect", "terminate"):
            self.detached = True
        args = msg.get("arguments") if isinstance(msg.get("arguments"), dict) else {}
        if msg.get("command") == "terminate" or (msg.get("command") == "disconnect" and args.get("terminateDebuggee")):
            msg["command"] = "disconnect"
            msg["arguments"] = {**args, "terminateDebuggee": False}
            msg["arguments"].pop("restart", None)
            self.rewritten += 1
            return json.dumps(msg).encode()
        return body


def frame(body: bytes) -> bytes:
    """One DAP message on the wire: its header, then the body."""
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def disconnect_message() -> bytes:
    """A `disconnect` request that leaves the debuggee running: what a debugger sends when it detaches."""
    return frame(json.dumps({"seq": OWN_SEQ, "type": "request", "command": "disconnect",
                             "arguments": {"restart": False, "terminateDebuggee": False}}).encode())
