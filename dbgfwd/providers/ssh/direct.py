"""The rank's answers go from paramiko's transport thread straight to the debugger's socket.

paramiko hands every packet it decrypts to a channel's buffer and wakes whichever thread reads the channel: for
a forward, the relay thread, which then copies the bytes into the debugger's socket. On two shared cores that
wake-up (a condition variable, then the GIL passing between two threads) was most of what a DAP round trip
through dbgfwd cost more than one through `ssh -L`. Here the transport thread writes the bytes to the
debugger's socket itself, without blocking: when the socket takes them all, no other thread runs at all.

What stays as it was:
- A socket that takes only part (a slow debugger) gets the rest from the relay thread, through the buffer,
  with a blocking send: back-pressure and the channel's window work as before, and bytes never overtake each
  other (nothing is written directly while the relay thread holds bytes it has not sent).
- A socket that fails is left to the relay thread too: the bytes are buffered, and its own send finds the
  failure and does what it does for a debugger that is gone.
- The window: bytes written directly are counted as read (`_check_add_window`), and the window adjustment
  that may follow is sent by the relay thread, never by the transport thread, which must stay free to finish
  a key exchange (paramiko's send waits for one).
- Locks: the channel's lock is never taken while this buffer's is held (paramiko closes a channel holding its
  lock and then takes the buffer's).

Best effort: paramiko's Channel and BufferedPipe internals are used as paramiko 3.4-5.x has them; with another
layout `install` does nothing and channels are read the usual way. Windows has no MSG_DONTWAIT: same.
"""

from __future__ import annotations

import functools
import logging
import socket
import time
import weakref
from typing import Callable

log = logging.getLogger("dbgfwd.ssh.direct")

_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


def install(transport) -> bool:
    """Give every channel `transport` opens from now on a DirectPipe as its input buffer (see the module)."""
    try:
        from paramiko.buffered_pipe import BufferedPipe
        from paramiko.transport import ChannelMap
    except ImportError:
        return False
    if not _DONTWAIT or not isinstance(getattr(transport, "_channels", None), ChannelMap) or \
            not hasattr(BufferedPipe, "_buffer_frombytes"):
        return False
    pipe_class = _pipe_class(BufferedPipe)

    class Channels(ChannelMap):
        def put(self, chanid, chan):
            # before the channel is announced to the server: no byte can have arrived for it yet
            if type(getattr(chan, "in_buffer", None)) is BufferedPipe and not len(chan.in_buffer):
                chan.in_buffer = pipe_class(chan)
                chan.push_to = chan.in_buffer.push_to
            super().put(chanid, chan)

    if len(transport._channels.values()):
        return False
    transport._channels = Channels()
    return True


@functools.lru_cache(maxsize=None)
def _pipe_class(base):
    """DirectPipe: paramiko's BufferedPipe (imported only once paramiko is), with _DirectMixin's behaviour."""
    return type("DirectPipe", (_DirectMixin, base), {})


class _DirectMixin:
    """BufferedPipe, plus a socket the transport thread writes to directly (see the module)."""

    def __init__(self, channel) -> None:
        super().__init__()
        self._channel = weakref.ref(channel)
        self._sink: socket.socket | None = None
        self._on_sent: Callable[[memoryview], None] | None = None
        self._held = False  # the reader took bytes it has not sent yet: write nothing directly until it is back
        self._ack = 0  # window owed to the server for bytes written directly, sent by the reader
        self.direct = 0  # bytes written directly so far

    def push_to(self, sock: socket.socket, on_sent: Callable[[memoryview], None]) -> Callable[[], None]:
        """From now on write what arrives to `sock` directly when it takes it without blocking; `on_sent` sees
        each part so written (in the transport thread, under this buffer's lock). Returns the function that
        stops it: once that has returned, nothing more is written to `sock` from here."""
        with self._lock:
            self._sink, self._on_sent = sock, on_sent

        def stop() -> None:
            with self._lock:
                self._sink = self._on_sent = None

        return stop

    def feed(self, data) -> None:
        data = bytes(data)
        sent = 0
        with self._lock:
            sink = self._sink
            if sink is not None and not self._held and not len(self._buffer) and not self._closed:
                try:
                    sent = sink.send(data, _DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError as exc:  # the debugger is gone: the reader's own send finds out and handles it
                    log.debug("direct write stopped: %s", exc)
                    self._sink = self._on_sent = None
                    sent = 0
                if sent:
                    self.direct += sent
                    self._on_sent(memoryview(data)[:sent])
            rest = data[sent:] if sent else data
            if rest:
                if self._event is not None:
                    self._event.set()
                self._buffer_frombytes(rest)
                self._cv.notify_all()
        if sent:
            channel = self._channel()
            ack = channel._check_add_window(sent) if channel is not None else 0
            if ack > 0:
                with self._lock:
                    self._ack += ack
                    self._cv.notify_all()

    def read(self, nbytes, timeout=None):
        from paramiko.buffered_pipe import PipeTimeout

        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._held = False  # the reader is back: whatever it took before has been sent
            while True:
                if self._ack:
                    ack, self._ack = self._ack, 0
                    self._lock.release()
                    try:
                        self._send_window(ack)
                    finally:
                        self._lock.acquire()
                    continue
                if len(self._buffer) or self._closed:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise PipeTimeout()
                self._cv.wait(left)
            out = self._buffer_tobytes(nbytes)
            del self._buffer[:nbytes]
            if out:
                self._held = self._sink is not None
            if not len(self._buffer) and self._event is not None and not self._closed:
                self._event.clear()
            return out

    def _send_window(self, ack: int) -> None:
        """What Channel.recv sends after reading: the server may send `ack` more bytes."""
        from paramiko.common import cMSG_CHANNEL_WINDOW_ADJUST
        from paramiko.message import Message

        channel = self._channel()
        if channel is None or channel.closed:
            return
        m = Message()
        m.add_byte(cMSG_CHANNEL_WINDOW_ADJUST)
        m.add_int(channel.remote_chanid)
        m.add_int(ack)
        channel.transport._send_user_message(m)
