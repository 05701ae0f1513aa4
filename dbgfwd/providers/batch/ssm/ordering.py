"""Sequencing state of one data channel: in-order delivery of what arrives, and the retransmission timer."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from dbgfwd.errors import UpstreamError
from dbgfwd.providers.batch.ssm import message as m
from dbgfwd.net.websocket import OP_BINARY, encode_frame

REORDER_CAPACITY = 10000
REORDER_MAX_BYTES = 16 * 1024 * 1024  # out-of-order payloads held at most; more are not acked (resent later)
RTO_MIN, RTO_MAX = 0.2, 1.0
CHUNK = 1024  # payload bytes per message, as the plugin sends
WINDOW = 512  # messages in flight; more only adds queueing delay and spurious resends
RETRANSMIT_BATCH = 512


class Inbound:
    """Numbers what the agent sends from 0; messages ahead of the next one wait in a bounded buffer."""

    def __init__(self, capacity: int = REORDER_CAPACITY, max_bytes: int = REORDER_MAX_BYTES):
        self.next_seq = 0
        self._ahead: dict[int, m.AgentMessage] = {}
        self._capacity = capacity
        self._max_bytes = max_bytes
        self.held_bytes = 0

    def accept(self, msg: m.AgentMessage) -> tuple[bool, list[m.AgentMessage]]:
        """(acknowledge it?, messages now deliverable in order). Duplicates are acked, never delivered twice;
        a message too far ahead is not acked, so the agent sends it again later."""
        ahead = msg.sequence - self.next_seq
        if ahead >= self._capacity:
            return False, []
        if ahead < 0:
            return True, []
        if ahead > 0:
            if msg.sequence not in self._ahead:
                if self.held_bytes + len(msg.payload) > self._max_bytes:
                    return False, []  # bounded in bytes too: not acked, so the agent sends it again later
                self.held_bytes += len(msg.payload)
                self._ahead[msg.sequence] = msg
            return True, []
        ready = [msg]
        self.next_seq += 1
        while self.next_seq in self._ahead:
            held = self._ahead.pop(self.next_seq)
            self.held_bytes -= len(held.payload)
            ready.append(held)
            self.next_seq += 1
        return True, ready


class RetransmitTimer:
    """An adaptive retransmission timeout (RFC 6298 style) bounded to RTO_MIN..RTO_MAX."""

    def __init__(self) -> None:
        self._srtt: float | None = None
        self._rttvar = 0.0
        self.rto = RTO_MIN

    def sample(self, rtt: float) -> None:
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        self.rto = min(RTO_MAX, max(RTO_MIN, self._srtt + 4 * self._rttvar))


@dataclass
class _Pending:
    frame: bytes
    first_sent: float
    sent: float
    retransmitted: bool = False


class Outbound:
    """What this side sends, numbered from 0, and what the agent has not acknowledged yet (the window).

    `lock` also guards `closing` and `paused`; senders wait on it for room in the window.
    """

    def __init__(self, clock: Callable[[], float]):
        mutex = threading.RLock()
        self.lock = threading.Condition(mutex)
        # The retransmit thread waits here, apart from senders and acks: an idle session's thread sleeps until a
        # frame enters an empty window, and a busy one until the oldest frame's timeout, never on every ack.
        self._timer_cv = threading.Condition(mutex)
        self.timer = RetransmitTimer()
        self.closing = False
        self._paused = False
        self._window: dict[int, _Pending] = {}
        self._next_seq = 0
        self._clock = clock

    def send(self, data: bytes, payload_type: int, write: Callable[[list[bytes]], None],
             why_closed: Callable[[], str]) -> None:
        """Chunk `data` into messages in the window and `write` their frames, in batches, waiting for room."""
        view = memoryview(data)
        offsets = range(0, len(data), CHUNK) if data else [0]
        batch: list[bytes] = []
        for off in offsets:
            with self.lock:
                while len(self._window) >= WINDOW or self._paused:
                    if self.closing:
                        break
                    if batch:  # flush what is queued before sleeping, outside the lock
                        self.lock.release()
                        try:
                            write(batch)
                        finally:
                            self.lock.acquire()
                        batch = []
                        continue
                    self.lock.wait(0.5)
                if self.closing:
                    raise UpstreamError(f"SSM session is closed: {why_closed() or 'closing'}")
                seq = self._next_seq
                self._next_seq += 1
                if not self._window:
                    self._timer_cv.notify_all()
                frame = encode_frame(OP_BINARY, m.AgentMessage(m.INPUT, seq, payload_type,
                                                               bytes(view[off:off + CHUNK])).encode())
                now = self._clock()
                self._window[seq] = _Pending(frame, now, now)
            batch.append(frame)
        if batch:
            write(batch)

    def acknowledged(self, seq: int) -> None:
        with self.lock:
            pending = self._window.pop(seq, None)
            if pending is None:
                return
            if not pending.retransmitted:  # Karn: only unambiguous samples
                self.timer.sample(self._clock() - pending.first_sent)
            self.lock.notify_all()

    def wait_due(self, idle: float) -> list[bytes]:
        """Frames due again (see `due`), once the oldest unacknowledged frame's timeout has run out. With nothing
        in flight, waits up to `idle` seconds for a frame to be sent and returns [] (as it does once closing)."""
        with self.lock:
            if self.closing:
                return []
            if not self._window:
                self._timer_cv.wait(idle)
                return []
            wait = min(p.sent for p in self._window.values()) + self.timer.rto - self._clock()
            if wait > 0:
                self._timer_cv.wait(wait)
                if self.closing:
                    return []
            return self.due()

    def due(self) -> list[bytes]:
        """Frames unacknowledged for longer than the RTO, marked as sent again now."""
        now = self._clock()
        with self.lock:
            rto, due = self.timer.rto, []
            for p in self._window.values():
                if now - p.sent >= rto:
                    p.sent, p.retransmitted = now, True
                    due.append(p.frame)
                    if len(due) >= RETRANSMIT_BATCH:
                        break
            return due

    def unacknowledged(self) -> list[bytes]:
        """Every frame in the window, marked as sent again now (after a reconnect)."""
        now = self._clock()
        with self.lock:
            for p in self._window.values():
                p.sent, p.retransmitted = now, True
            return [p.frame for p in self._window.values()]

    def wait_acknowledged(self, timeout: float) -> bool:
        """Until everything sent is acknowledged (or closing, or `timeout`). True when it all was."""
        with self.lock:
            return self.lock.wait_for(lambda: not self._window or self.closing, timeout) and not self._window

    def pause(self, paused: bool) -> None:
        with self.lock:
            self._paused = paused
            self.lock.notify_all()

    def close(self) -> None:
        with self.lock:
            self.closing = True
            self.lock.notify_all()
            self._timer_cv.notify_all()
