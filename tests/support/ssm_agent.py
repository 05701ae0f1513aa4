"""A test SSM service + agent speaking the data channel of shared/PROTOCOLS.md, strictly.

It plays both halves AWS runs (the ssmmessages websocket endpoint and amazon-ssm-agent on the
target) for Port sessions: it checks the open message and single-use tokens, every AgentMessage
header and digest, sequence numbers (a retransmission must be byte-identical to the original),
acknowledgements (they must name a message it sent), the handshake order, and smux v1 frames;
each breach is recorded in `violations` (tests assert it stays empty) and closes the websocket.
On smux SYN it dials the real port (a debugpy rank on loopback).

Fault knobs: `drop`, `duplicate`, `reorder` (probabilities, both directions), `close_websockets()`,
`idle_timeout` with an injectable `clock` (so 30 idle minutes pass in a second), `agent_version`.
"""

from __future__ import annotations

import json
import queue
import random
import socket
import struct
import threading
import time
import uuid
from urllib.parse import parse_qs, urlsplit

from tests.support import ssm_ws as ws
from tests.support.net import close_listener
from tests.support.ssm_wire import _pack, _parse, _Parsed

OPEN_KEYS = {"MessageSchemaVersion", "RequestId", "TokenValue", "ClientId", "ClientVersion"}
ACK_KEYS = {"AcknowledgedMessageType", "AcknowledgedMessageId", "AcknowledgedMessageSequenceNumber",
            "IsSequentialMessage"}
CHUNK = 1024
WINDOW = 1024
RTO = 0.2


class AgentSession:
    def __init__(self, agent: "TestSsmAgent", sid: str, target: str, document: str, params: dict):
        self.agent, self.id, self.target, self.document, self.params = agent, sid, target, document, params
        self.token = ""
        self.tokens_used: list[str] = []
        self.lock = threading.Condition()
        self.sock: ws.ServerSocket | None = None
        self.connections = 0
        self.out_seq = 0
        self.window: dict[int, list] = {}  # seq -> [frame, sent_at]
        self.sent_ids: dict[int, str] = {}
        self.in_seq = 0
        self.seen: dict[int, tuple[bytes, str]] = {}
        self.reorder: dict[int, _Parsed] = {}
        self.handshake = "none"  # none -> sent -> complete
        self.client_version = ""
        self.streams: dict[int, socket.socket] = {}
        self.dialed = 0  # streams opened to the target's port so far
        self.client_fin: set[int] = set()
        self.agent_fin: set[int] = set()
        self.last_sid = 1
        self.smux_buf = bytearray()
        self.nops = 0
        self.last_input = agent.clock()
        self.closed = False
        self.end_reason = ""
        self.idle_closed = False
        self.held: list[bytes] = []
        self.received_bytes = 0
        self.outq: queue.Queue = queue.Queue()
        threading.Thread(target=self._writer, daemon=True, name=f"agent-writer-{sid}").start()

    # ---- agent -> client ----
    def send(self, ptype: int, payload: bytes, block: bool = True) -> None:
        with self.lock:
            while block and len(self.window) >= WINDOW and not self.closed:
                self.lock.wait(0.2)
            if self.closed:
                raise ws.Closed("session closed")
            seq = self.out_seq
            self.out_seq += 1
            data, mid = _pack("output_stream_data", seq, ptype, payload)
            frame = ws.server_frame(ws.BINARY, data)
            self.window[seq] = [frame, time.monotonic()]
            self.sent_ids[seq] = mid
            self.transmit([frame])

    def transmit(self, frames: list[bytes]) -> None:
        """Send with the fault knobs applied (caller holds the lock)."""
        agent, out = self.agent, []
        for f in frames:
            r = agent.rng.random()
            if r < agent.drop:
                continue
            out.append(f)
            if r < agent.drop + agent.duplicate:
                out.append(f)
            elif agent.rng.random() < agent.reorder:
                self.held.append(out.pop())
        if self.held and out:
            out += self.held
            self.held = []
        if out:
            # Written by the session's own writer thread, never under the lock: a writer blocked on a peer
            # that does not read must not stop this side from reading that peer's acks (a deadlock).
            self.outq.put((time.monotonic() + self.agent.latency, b"".join(out)))

    def _writer(self) -> None:
        while True:
            due, data = self.outq.get()
            wait = due - time.monotonic()
            if wait > 0:  # the service is some distance away: what was queued arrives `latency` later, in order
                time.sleep(wait)
            if data is None:
                return
            if callable(data):
                data()
                continue
            sock = self.sock
            if sock is not None:
                try:
                    sock.send_raw(data)
                except ws.Closed:
                    pass

    def send_control(self, mtype: str, payload: bytes) -> None:
        data, _ = _pack(mtype, 0, 0, payload, flags=3)
        self.outq.put((time.monotonic() + self.agent.latency, ws.server_frame(ws.BINARY, data)))  # in order

    def violation(self, text: str) -> None:
        self.agent.violations.append(f"{self.id}: {text}")
        if self.sock is not None:
            self.sock.close(code=1002)  # RFC 6455 7.4.1: protocol error

    # ---- client -> agent ----
    def on_message(self, data: bytes, acks: list[bytes]) -> None:
        try:
            msg = _parse(data)
        except ValueError as exc:
            self.violation(str(exc))
            return
        if self.agent.rng.random() < self.agent.drop:
            return  # lost on the way in: no ack, no processing
        if msg.mtype == "acknowledge":
            self.on_ack(msg)
        elif msg.mtype == "input_stream_data":
            self.on_input(msg, acks)
        else:
            self.violation(f"client sent MessageType {msg.mtype!r}")

    def on_ack(self, msg: _Parsed) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return self.violation("acknowledge payload is not JSON")
        if set(body) != ACK_KEYS or body["AcknowledgedMessageType"] != "output_stream_data" \
                or body["IsSequentialMessage"] is not True:
            return self.violation(f"malformed acknowledge {body}")
        seq = body["AcknowledgedMessageSequenceNumber"]
        if self.sent_ids.get(seq) != body["AcknowledgedMessageId"]:
            return self.violation(f"acknowledge names a message never sent: seq {seq}")
        with self.lock:
            self.window.pop(seq, None)
            self.lock.notify_all()

    def on_input(self, msg: _Parsed, acks: list[bytes]) -> None:
        if msg.seq < 0:
            return self.violation(f"negative sequence number {msg.seq}")
        prior = self.seen.get(msg.seq)
        if prior is not None and prior != (msg.digest, msg.mid):
            # The real agent keys on the sequence number alone: a second message under a used number is acked
            # and dropped as a duplicate. Recorded, so that tests of dbgfwd's own client can forbid it
            # (the batch `world` fixture checks it at exit); the real plugin 1.2.0.0 was seen doing it.
            self.agent.seq_conflicts.append(f"{self.id}: sequence number {msg.seq} reused for a different message")
        body = {"AcknowledgedMessageType": "input_stream_data", "AcknowledgedMessageId": msg.mid,
                "AcknowledgedMessageSequenceNumber": msg.seq, "IsSequentialMessage": True}
        acks.append(ws.server_frame(ws.BINARY, _pack("acknowledge", 0, 0, json.dumps(body).encode(), 3)[0]))
        self.last_input = self.agent.clock()
        if prior is not None or msg.seq < self.in_seq:
            return
        self.seen[msg.seq] = (msg.digest, msg.mid)
        if msg.ptype == 6 and acks:
            # The real agent acknowledges the HandshakeResponse from its reader, and sends HandshakeComplete from
            # its handshake goroutine a moment later: the ack goes first. (Sent after HandshakeComplete instead,
            # it lands in the real plugin 1.2.0.0 while its port session is half set up: PortSession.Initialize has
            # installed a message handler that reads MuxPortForwarding.muxClient, still nil until InitializeStreams
            # returns; the nil dereference panics the websocket reader, whose recover() ends it, and the plugin
            # never reads the data channel again. Loopback made that 1 run in 8.)
            with self.lock:
                self.transmit(list(acks))
            acks.clear()
        self.reorder[msg.seq] = msg
        while self.in_seq in self.reorder:
            m = self.reorder.pop(self.in_seq)
            self.in_seq += 1
            self.process(m)

    def process(self, msg: _Parsed) -> None:
        if msg.ptype == 6:
            if self.handshake != "sent":
                return self.violation("HandshakeResponse without a pending HandshakeRequest")
            try:
                body = json.loads(msg.payload)
                actions = body["ProcessedClientActions"]
                # The real plugin adds "ActionResult" and "Error" to each action: extra keys are fine.
                ok = (isinstance(body["ClientVersion"], str) and "Errors" in body and isinstance(actions, list)
                      and any(isinstance(a, dict) and a.get("ActionType") == "SessionType"
                              and a.get("ActionStatus") == 1 for a in actions))
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                return self.violation(f"bad HandshakeResponse {msg.payload[:200]!r}")
            self.client_version = body["ClientVersion"]
            self.handshake = "complete"
            self.send(7, json.dumps({"HandshakeTimeToComplete": 1000000, "CustomerMessage": ""}).encode(),
                      block=False)
        elif msg.ptype == 1:
            if self.handshake != "complete":
                return self.violation("stream data before HandshakeComplete")
            self.received_bytes += len(msg.payload)
            self.smux_feed(msg.payload)
        elif msg.ptype == 10:
            flag = int.from_bytes(msg.payload[:4], "big")
            if flag == 2:
                self.agent.end_session(self.id, "TerminateSession flag")
            elif flag != 1:
                self.violation(f"unknown flag {flag}")
        else:
            self.violation(f"unexpected PayloadType {msg.ptype}")

    # ---- smux server side ----
    def smux_feed(self, data: bytes) -> None:
        buf = self.smux_buf
        buf += data
        while len(buf) >= 8:
            ver, cmd, ln, sid = struct.unpack_from("<BBHI", buf)
            if ver != 1 or cmd > 3:
                return self.violation(f"bad smux header ver={ver} cmd={cmd}")
            if len(buf) < 8 + ln:
                return
            payload = bytes(buf[8:8 + ln])
            del buf[:8 + ln]
            if cmd == 0:  # SYN
                if ln or sid % 2 == 0 or sid <= self.last_sid or sid in self.streams:
                    return self.violation(f"bad smux SYN for stream {sid}")
                self.last_sid = sid
                self.dial(sid)
            elif cmd == 2:  # PSH
                if sid > self.last_sid or sid % 2 == 0 or sid in self.client_fin:
                    return self.violation(f"smux PSH on stream {sid} that is not open")
                sock = self.streams.get(sid)
                if sock is not None and payload:
                    try:
                        sock.sendall(payload)
                    except OSError:
                        pass
            elif cmd == 1:  # FIN: the real agent answers with its own and closes the target connection fully
                if sid > self.last_sid or sid % 2 == 0 or sid in self.client_fin:
                    return self.violation(f"smux FIN on stream {sid} that is not open")
                self.client_fin.add(sid)
                sock = self.streams.pop(sid, None)
                if sock is not None:
                    self._fin(sid)
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    sock.close()
            else:
                self.nops += 1

    def dial(self, sid: int) -> None:
        host = self.params.get("host", [None])[0] or self.agent.localhost_of.get(self.target, "127.0.0.1")
        port = int(self.params["portNumber"][0])
        try:
            sock = socket.create_connection((host, port), timeout=5)
            sock.settimeout(None)
        except OSError:
            self.agent.dial_failures += 1
            self.send(1, struct.pack("<BBHI", 1, 1, 0, sid), block=False)
            return
        self.streams[sid] = sock
        self.dialed += 1
        threading.Thread(target=self.pump, args=(sid, sock), daemon=True).start()

    def pump(self, sid: int, sock: socket.socket) -> None:
        try:
            while True:
                data = sock.recv(16384)
                if not data:
                    break
                for off in range(0, len(data), CHUNK):  # split and paced as the real agent does
                    part = data[off:off + CHUNK]
                    self.send(1, struct.pack("<BBHI", 1, 2, len(part), sid) + part)
                    if self.agent.pace:
                        time.sleep(self.agent.pace)
            self._fin(sid)
        except (OSError, ws.Closed):
            pass
        finally:
            self.streams.pop(sid, None)
            sock.close()

    def _fin(self, sid: int) -> None:
        """The agent's FIN for a stream, once."""
        with self.lock:
            if sid in self.agent_fin:
                return
            self.agent_fin.add(sid)
        try:
            self.send(1, struct.pack("<BBHI", 1, 1, 0, sid), block=False)
        except ws.Closed:
            pass

    def retransmit(self) -> None:
        now = time.monotonic()
        with self.lock:
            due = []
            for entry in self.window.values():
                if now - entry[1] >= RTO:
                    entry[1] = now
                    due.append(entry[0])
            if self.held and not due:
                due, self.held = self.held, []
            if due:
                self.transmit(due)


class TestSsmAgent:
    __test__ = False

    def __init__(self, *, drop: float = 0.0, duplicate: float = 0.0, reorder: float = 0.0, seed: int = 1,
                 idle_timeout: float | None = None, clock=time.monotonic,
                 localhost_of: dict[str, str] | None = None, agent_version: str = "3.3.987.0",
                 pace: float = 0.001, properties_with_local_port: bool = True, latency: float = 0.0):
        self.drop, self.duplicate, self.reorder = drop, duplicate, reorder
        self.rng = random.Random(seed)
        self.idle_timeout, self.clock = idle_timeout, clock
        self.localhost_of = dict(localhost_of or {})
        self.agent_version = agent_version
        # The real agent sends 1 KiB messages about 1 ms apart; 0 lifts the pacing for bulk fault tests.
        self.pace = pace
        self.properties_with_local_port = properties_with_local_port
        # One-way delay of everything sent to the client (the service is across a network, never 0 ms away).
        self.latency = latency
        self.sessions: dict[str, AgentSession] = {}
        self.violations: list[str] = []
        self.seq_conflicts: list[str] = []
        self.dial_failures = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True),
                         threading.Thread(target=self._timer_loop, daemon=True)]

    def __enter__(self) -> "TestSsmAgent":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        close_listener(self._listener)
        for sid in list(self.sessions):
            self.end_session(sid, "agent stopped")

    # ---- called by the test SSM API server ----
    def create_session(self, sid: str, target: str, document: str, params: dict) -> tuple[str, str]:
        sess = self.sessions[sid] = AgentSession(self, sid, target, document, params)
        sess.token = uuid.uuid4().hex + uuid.uuid4().hex
        return sess.token, f"ws://127.0.0.1:{self.port}/v1/data-channel/{sid}?role=publish_subscribe&cell-number=AAEAAQ"

    def resume_session(self, sid: str) -> str:
        sess = self.sessions[sid]
        sess.token = uuid.uuid4().hex + uuid.uuid4().hex
        return sess.token

    def end_session(self, sid: str, why: str) -> None:
        sess = self.sessions.get(sid)
        if sess is None or sess.closed:
            return
        sess.end_reason = why
        body = {"MessageType": "channel_closed", "SessionId": sid, "Output": why, "SchemaVersion": 1,
                "MessageId": str(uuid.uuid4()), "CreatedDate": "2026-01-01T00:00:00.000Z", "DestinationId": ""}
        sess.send_control("channel_closed", json.dumps(body).encode())
        with sess.lock:
            sess.closed = True
            sess.lock.notify_all()
        sock = sess.sock
        if sock is not None:
            sess.outq.put((0.0, sock.close))  # once what was queued before (channel_closed last) is written
            sess.outq.put((0.0, None))
        for s in list(sess.streams.values()):
            s.close()

    def close_websockets(self) -> None:
        """Fault: drop every live websocket abruptly (as a network failure would)."""
        for sess in self.sessions.values():
            if sess.sock is not None:
                sess.sock.close(abrupt=True)

    # ---- websocket side ----
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            path, headers = ws.read_upgrade(conn)
        except (ws.Closed, ws.ProtocolViolation, OSError) as exc:
            self.violations.append(f"upgrade: {exc}")
            conn.close()
            return
        parts = urlsplit(path)
        sid = parts.path.rsplit("/", 1)[-1]
        sess = self.sessions.get(sid)
        if not parts.path.startswith("/v1/data-channel/") or sess is None or sess.closed \
                or parse_qs(parts.query).get("role") != ["publish_subscribe"]:
            ws.reject(conn, "404 Not Found")
            conn.close()
            return
        ws.accept(conn, headers["_accept"])
        sock = ws.ServerSocket(conn)
        try:
            op, data = sock.recv()
            opened = json.loads(data) if op == ws.TEXT else None
        except (ws.Closed, ws.ProtocolViolation, ValueError) as exc:
            self.violations.append(f"{sid}: bad open message: {exc}")
            sock.close()
            return
        if not isinstance(opened, dict) or set(opened) != OPEN_KEYS or opened["MessageSchemaVersion"] != "1.0":
            self.violations.append(f"{sid}: bad open message keys")
            sock.close()
            return
        if not sess.token or opened["TokenValue"] != sess.token:
            self.violations.append(f"{sid}: open message with a wrong or reused token")
            sock.close()
            return
        sess.tokens_used.append(sess.token)
        sess.token = ""  # single use
        with sess.lock:
            old, sess.sock = sess.sock, sock
            sess.connections += 1
        if old is not None:
            old.close(abrupt=True)
        if sess.handshake == "none":
            sess.handshake = "sent"
            # As a Port document's SessionType properties after parameter substitution: the real plugin
            # takes its local port from localPortNumber here (and picks one at random when it is absent).
            props = {"portNumber": sess.params["portNumber"][0], "type": "LocalPortForwarding"}
            for key in ("localPortNumber", "host"):
                if sess.params.get(key) and self.properties_with_local_port:
                    props[key] = sess.params[key][0]
            req = {"AgentVersion": self.agent_version, "RequestedClientActions": [
                {"ActionType": "SessionType", "ActionParameters": {"SessionType": "Port", "Properties": props}}]}
            sess.send(5, json.dumps(req).encode(), block=False)
        else:
            with sess.lock:
                for entry in sess.window.values():
                    entry[1] = time.monotonic()
                sess.transmit([e[0] for e in sess.window.values()])
        self._read_loop(sess, sock)

    def _read_loop(self, sess: AgentSession, sock: ws.ServerSocket) -> None:
        acks: list[bytes] = []
        while True:
            try:
                op, data = sock.recv()
            except ws.ProtocolViolation as exc:
                sess.violation(str(exc))
                return
            except ws.Closed:
                return
            if op != ws.BINARY:
                sess.violation("TEXT message after the open message")
                return
            sess.on_message(data, acks)
            if acks and (len(acks) >= 64 or not sock.has_frame()):
                with sess.lock:
                    sess.transmit(acks)
                acks = []

    def _timer_loop(self) -> None:
        while not self._stop.wait(0.05):
            for sess in list(self.sessions.values()):
                if sess.closed:
                    continue
                sess.retransmit()
                if self.idle_timeout is not None and self.clock() - sess.last_input > self.idle_timeout:
                    sess.idle_closed = True
                    self.end_session(sess.id, "idle timeout")
