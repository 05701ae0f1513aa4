"""The SSM client's websocket: closing it never waits on a peer that stopped reading."""

import socket
import threading
import time

import pytest

from dbgfwd.providers.batch.ssm.wsock import WebSocket, WebSocketError


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
    while not ws._send_lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # the sender is now blocked inside sendall, holding the lock
    assert t.is_alive() and ws._send_lock.locked()
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
