"""The SSM data channel: reliable, ordered delivery of AgentMessages over one websocket.

What it does (shared/PROTOCOLS.md, "SSM data channel"): sends the open message with the session
token, acknowledges every stream-data message it receives, delivers them in sequence order through
a reorder buffer (duplicates and old ones are re-acked and dropped), retransmits its own unacked
messages after an adaptive RTO (200 ms .. 1 s), answers the Port-session handshake, and, when the
websocket fails, asks for a new token (ResumeSession) and reconnects keeping all sequence state.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

from dbgfwd.errors import DbgfwdError, UpstreamError
from dbgfwd.providers.batch.ssm import message as m
from dbgfwd.providers.batch.ssm.handshake import CLIENT_VERSION, Handshake, respond
from dbgfwd.providers.batch.ssm.ordering import Inbound, Outbound
from dbgfwd.net.websocket import OP_BINARY, WebSocket, WebSocketError, encode_frame

log = logging.getLogger("dbgfwd.batch.ssm")
IDLE_WAKE = 30.0  # seconds the retransmit thread of a session with nothing in flight sleeps between checks


# resume(): -> (token, stream_url or None). Raises DbgfwdError when resuming is impossible.
ResumeFn = Callable[[], "tuple[str, str | None]"]


class DataChannel:
    """One data channel. Thread-safe `send_output`; callbacks run on the reader thread."""

    def __init__(self, stream_url: str, token: str, *, on_output: Callable[[bytes], None],
                 on_closed: Callable[[str], None] = lambda reason: None,
                 on_flag: Callable[[int], None] = lambda flag: None,
                 resume: ResumeFn | None = None, resume_timeout: float = 120.0,
                 connect_timeout: float = 10.0, label: str = "ssm",
                 clock: Callable[[], float] = time.monotonic):
        self._url = stream_url
        self._token = token
        self._on_output, self._on_closed, self._on_flag = on_output, on_closed, on_flag
        self._resume, self._resume_timeout = resume, resume_timeout
        self._connect_timeout = connect_timeout
        self._label = label
        self._clock = clock
        self._client_id = str(__import__("uuid").uuid4())
        self._ws: WebSocket | None = None
        self._send_lock = threading.Lock()
        self._out = Outbound(clock)
        self._inbound = Inbound()
        self.connected = threading.Event()
        self.handshake_done = threading.Event()
        self.closed = threading.Event()
        self.close_reason = ""
        self.handshake: Handshake | None = None
        self.resumes = 0
        self.retransmits = 0
        self._threads: list[threading.Thread] = []

    # ---- lifecycle ----
    def start(self) -> None:
        self._ws = self._dial(self._url, self._token)
        self._token = ""  # single use; never kept around
        self.connected.set()
        for target, name in ((self._read_loop, "reader"), (self._retransmit_loop, "retransmit")):
            t = threading.Thread(target=target, name=f"dbgfwd-{self._label}-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _dial(self, url: str, token: str) -> WebSocket:
        ws = WebSocket.connect(url, timeout=self._connect_timeout)
        ws.send_text(m.open_message(token, self._client_id, CLIENT_VERSION))
        return ws

    def wait_handshake(self, timeout: float) -> Handshake:
        deadline = time.monotonic() + timeout
        while not self.handshake_done.wait(0.05):
            if self.closed.is_set():
                raise UpstreamError(f"SSM session closed during the handshake: {self.close_reason}")
            if time.monotonic() > deadline:
                raise UpstreamError(f"SSM agent did not complete the handshake within {timeout:.0f}s")
        assert self.handshake is not None
        return self.handshake

    def close(self, reason: str = "closed by dbgfwd") -> None:
        self._out.close()
        if self._ws is not None:
            self._ws.close()
        self._mark_closed(reason)

    def _mark_closed(self, reason: str) -> None:
        with self._out.lock:
            if self.closed.is_set():
                return
            self.close_reason = reason
            self.closed.set()
            self.connected.set()  # wake waiters; they check `closed`
        self._out.close()
        log.debug("%s: data channel closed: %s", self._label, reason)
        self._on_closed(reason)

    # ---- sending ----
    def send_output(self, data: bytes, payload_type: int = m.PT_OUTPUT) -> None:
        """Queue `data` as input_stream_data messages (chunked); blocks while the window is full."""
        with self._send_lock:
            self._out.send(data, payload_type, self._write, lambda: self.close_reason)

    def send_flag(self, flag: int) -> None:
        self.send_output(flag.to_bytes(4, "big"), m.PT_FLAG)

    def _write(self, frames: list[bytes]) -> None:
        ws = self._ws
        if ws is None or not self.connected.is_set():
            return  # kept in the window; sent again after the reconnect
        try:
            ws.send_frames(frames)
        except WebSocketError:
            pass  # the reader notices and resumes

    def ping(self) -> None:
        ws = self._ws
        if ws is not None and self.connected.is_set():
            try:
                ws.ping()
            except WebSocketError:
                pass

    # ---- receiving ----
    def _read_loop(self) -> None:
        acks: list[bytes] = []
        while not self._out.closing:
            ws = self._ws
            try:
                op, data = ws.recv()
            except WebSocketError as exc:
                if self._out.closing:
                    break
                if not self._reconnect(str(exc)):
                    break
                continue
            if op != OP_BINARY:
                log.debug("%s: ignored a text message from the service", self._label)
                continue
            try:
                msg = m.AgentMessage.decode(data)
            except m.MessageError as exc:
                log.warning("%s: dropped a corrupt message (%s); the agent will resend it", self._label, exc)
                continue
            try:
                self._dispatch(msg, acks)
            except DbgfwdError as exc:
                self._mark_closed(exc.message)
                break
            except Exception as exc:  # whatever the agent sent, a reader that dies must close the channel
                log.debug("%s: protocol error", self._label, exc_info=True)
                self._mark_closed(f"protocol error from the SSM agent ({type(exc).__name__})")
                break
            if acks and (len(acks) >= 64 or not ws.has_buffered_frame()):
                self._write(acks)
                acks = []
        if acks:
            self._write(acks)

    def _dispatch(self, msg: m.AgentMessage, acks: list[bytes]) -> None:
        mtype = msg.message_type
        if mtype == m.ACK:
            self._on_ack(msg)
        elif mtype == m.OUTPUT:
            ack, ready = self._inbound.accept(msg)
            if ack:
                acks.append(encode_frame(OP_BINARY, m.ack_for(msg).encode()))
            for item in ready:
                self._deliver(item)
        elif mtype == m.CHANNEL_CLOSED:
            self._write(acks)
            acks.clear()
            self._mark_closed(_closed_reason(msg.payload))
        elif mtype in (m.PAUSE_PUBLICATION, m.START_PUBLICATION):
            self._out.pause(mtype == m.PAUSE_PUBLICATION)

    def _on_ack(self, msg: m.AgentMessage) -> None:
        try:
            seq = int(msg.json()["AcknowledgedMessageSequenceNumber"])
        except (ValueError, KeyError, TypeError):
            log.debug("%s: ignored a malformed acknowledge", self._label)
            return
        self._out.acknowledged(seq)

    def wait_acknowledged(self, timeout: float) -> bool:
        return self._out.wait_acknowledged(timeout)

    @property
    def rto(self) -> float:
        return self._out.timer.rto

    def _deliver(self, msg: m.AgentMessage) -> None:
        ptype = msg.payload_type
        if ptype == m.PT_HANDSHAKE_REQUEST:
            self._answer_handshake(msg)
        elif ptype == m.PT_HANDSHAKE_COMPLETE:
            self.handshake_done.set()
        elif ptype == m.PT_OUTPUT:
            if self.handshake_done.is_set():
                self._on_output(msg.payload)
        elif ptype == m.PT_FLAG and len(msg.payload) >= 4:
            self._on_flag(int.from_bytes(msg.payload[:4], "big"))
        elif ptype in (m.PT_ERROR, m.PT_STDERR):
            log.warning("%s: agent reported: %s", self._label, msg.payload[:200].decode("utf-8", "replace"))

    def _answer_handshake(self, msg: m.AgentMessage) -> None:
        body, agreed, errors = respond(msg)
        self.send_output(json.dumps(body).encode(), m.PT_HANDSHAKE_RESPONSE)
        if errors:
            raise UpstreamError(f"SSM session needs {'; '.join(errors)}",
                                hint="use --ssm-backend plugin (session-manager-plugin) for this document",
                                retryable=False)
        self.handshake = agreed

    # ---- retransmission and resume ----
    def _retransmit_loop(self) -> None:
        # Sleeps while nothing is in flight (an idle session at a breakpoint for hours costs no wakeups; 128
        # sessions polling every 50 ms cost 12 % of a core), and until the oldest frame's timeout otherwise.
        while not self._out.closing:
            if not self.connected.wait(IDLE_WAKE):
                continue  # resuming: the resumed websocket sends the whole window again
            due = self._out.wait_due(IDLE_WAKE)
            if due and self.connected.is_set():
                self.retransmits += len(due)
                self._write(due)

    def _reconnect(self, why: str) -> bool:
        self.connected.clear()
        if self._resume is None:
            self._mark_closed(f"websocket failed ({why})")
            return False
        log.info("%s: websocket failed (%s); resuming the session", self._label, why)
        deadline = time.monotonic() + self._resume_timeout
        delay = 0.2
        while not self._out.closing and time.monotonic() < deadline:
            try:
                token, url = self._resume()
                if url:
                    self._url = url
                ws = self._dial(self._url, token)
            except WebSocketError as exc:
                log.debug("%s: resume attempt failed: %s", self._label, exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            except DbgfwdError as exc:
                self._mark_closed(f"could not resume the session: {exc.message}")
                return False
            self._ws = ws
            self.resumes += 1
            frames = self._out.unacknowledged()
            self.connected.set()
            self._write(frames)
            return True
        self._mark_closed(f"websocket failed ({why}) and the session could not be resumed")
        return False


def _closed_reason(payload: bytes) -> str:
    try:
        body = json.loads(payload.decode("utf-8"))
        text = body.get("Output") or body.get("output") or ""
    except (ValueError, AttributeError):
        text = ""
    return f"agent closed the session{': ' + text if text else ''}"
