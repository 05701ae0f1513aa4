"""The websocket client (SSM data channel, Kubernetes exec and port-forward): closing never waits on a peer that
stopped reading; wss with one reader and several writers."""

import socket
import threading
import time

import pytest

from dbgfwd.net.websocket import WebSocket, WebSocketError


def test_close_ends_a_connection_whose_peer_stopped_reading_and_wakes_the_blocked_sender():
    """A sender blocked in sendall (the peer's buffers are full: it reads nothing) holds the send lock. close()
    used to wait for that lock, forever: Ctrl-C and the provider's close hung with it."""
    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ws = WebSocket(ours)
    failed: list[BaseException] = []

    def sender():
        try:
            while True:
                ws.send_binary(b"x" * 65536)
        except WebSocketError as exc:
            failed.append(exc)
    t = threading.Thread(target=sender, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not ws.lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # the sender is now blocked inside sendall, holding the lock
    assert t.is_alive() and ws.lock.locked()
    started = time.monotonic()
    ws.close()
    took = time.monotonic() - started
    t.join(5)
    peer.close()
    assert not t.is_alive() and failed, "the blocked sender was not woken"
    assert took < 5, f"close() took {took:.1f}s"  # bounded by the 0.5 s it gives the send lock, not by the peer
    with pytest.raises(WebSocketError):
        ws.send_binary(b"after")


def test_close_says_goodbye_when_the_peer_reads():
    ours, peer = socket.socketpair()
    ws = WebSocket(ours)
    ws.close()
    frame = peer.recv(16)
    assert frame[0] == 0x88 and frame[1] == 0x80 | 2  # FIN + close; masked (a client's frame), 2 bytes
    status = bytes(b ^ frame[2 + i % 4] for i, b in enumerate(frame[6:8]))
    assert status == (1000).to_bytes(2, "big")
    peer.close()


@pytest.fixture
def wss_echo(tmp_path, monkeypatch):
    """A wss:// echo server with a certificate of a test CA, which the client trusts through SSL_CERT_FILE (what
    the default context reads); each connection is served by one thread, reads and writes."""
    from dbgfwd.net import websocket
    from tests.support.k8s_ws import OP_CLOSE, ServerWebSocket, accept_key
    from tests.support.tlscert import make_pki

    pki = make_pki(tmp_path / "pki")
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    websocket._tls_context.cache_clear()
    listener = socket.create_server(("127.0.0.1", 0))
    ctx = pki.server_context()

    def serve():
        try:
            raw, _ = listener.accept()
        except OSError:
            return
        with ctx.wrap_socket(raw, server_side=True) as conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(1)
            key = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n")
            peer = ServerWebSocket(conn, conn.makefile("rb", buffering=0))
            while True:
                opcode, payload = peer.recv_message()
                if opcode == OP_CLOSE:
                    break
                peer.send(payload, opcode)
            served.append(peer.pings_received)

    served: list[int] = []
    server = threading.Thread(target=serve, daemon=True)
    server.start()
    yield f"wss://localhost:{listener.getsockname()[1]}/data", served
    listener.close()
    server.join(10)
    websocket._tls_context.cache_clear()


def test_over_wss_one_reader_and_two_writers_share_the_connection(wss_echo):
    # The SSM data channel: one thread reads while the debugger's bytes and the keepalive pings are sent from
    # others. On a plain SSLSocket that is two OpenSSL calls at once, which breaks the connection.
    url, served = wss_echo
    ws = WebSocket.connect(url, timeout=10)
    messages = [bytes([i % 251]) * (100 + i * 37 % 20000) for i in range(400)]
    back: list[bytes] = []
    errors: list[BaseException] = []

    def read():
        try:
            while len(back) < len(messages):
                back.append(ws.recv()[1])
        except BaseException as exc:
            errors.append(exc)

    def write():
        try:
            for m in messages:
                ws.send_binary(m)
        except BaseException as exc:
            errors.append(exc)

    def ping():
        try:
            for _ in range(200):
                ws.ping(b"keepalive")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (read, write, ping)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ws.close()
    assert not errors and back == messages
    deadline = time.monotonic() + 10
    while not served and time.monotonic() < deadline:
        time.sleep(0.01)
    assert served == [200]


def test_tls_sessions_kept_for_resuming_are_bounded(monkeypatch):
    from dbgfwd.net import websocket

    monkeypatch.setattr(websocket, "_sessions", {})
    for i in range(websocket._MAX_SESSIONS + 10):
        websocket._keep_session(("ctx", f"host-{i}", 443), object())
    assert len(websocket._sessions) == websocket._MAX_SESSIONS
    assert ("ctx", "host-0", 443) not in websocket._sessions  # the oldest went first
    assert ("ctx", f"host-{websocket._MAX_SESSIONS + 9}", 443) in websocket._sessions


def test_the_peers_close_is_answered_with_one_close_frame_carrying_its_code():
    ours, peer = socket.socketpair()
    ws = WebSocket(ours)
    peer.sendall(bytes([0x88, 2]) + (4001).to_bytes(2, "big"))  # the server's close, code 4001 (unmasked)
    with pytest.raises(WebSocketError, match="code 4001"):
        ws.recv()
    peer.settimeout(5)
    got = b""
    while chunk := peer.recv(64):
        got += chunk
    assert got[0] == 0x88 and len(got) == 2 + 4 + 2  # one masked close frame, nothing after it
    assert bytes(b ^ got[2 + i % 4] for i, b in enumerate(got[6:8])) == (4001).to_bytes(2, "big")
    peer.close()
