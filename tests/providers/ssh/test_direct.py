"""The transport thread's direct writes to the debugger's socket (dbgfwd.providers.ssh.direct), with real
sockets and a stand-in for the channel: each interleaving the relay depends on is forced here. Through real
sshd: test_provider.py::test_bulk_both_ways_through_a_relay_with_a_key_exchange_midway."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from paramiko.buffered_pipe import BufferedPipe
from paramiko.message import Message

from dbgfwd.providers.ssh import direct

pytestmark = pytest.mark.timeout(60)


class _Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[threading.Thread, int]] = []

    def _send_user_message(self, m: Message) -> None:
        msg = Message(m.asbytes())
        assert msg.get_byte() == bytes([93])  # MSG_CHANNEL_WINDOW_ADJUST
        assert msg.get_int() == 7
        self.sent.append((threading.current_thread(), msg.get_int()))


class _Channel:
    """What the pipe uses of a paramiko Channel, with paramiko's window rule (adjust past a threshold)."""

    def __init__(self, threshold: int = 1 << 30) -> None:
        self.lock = threading.Lock()
        self.closed = False
        self.remote_chanid = 7
        self.transport = _Transport()
        self.threshold = threshold
        self.counted: list[int] = []
        self._sofar = 0

    def _check_add_window(self, n: int) -> int:
        with self.lock:
            self.counted.append(n)
            self._sofar += n
            if self._sofar <= self.threshold:
                return 0
            out, self._sofar = self._sofar, 0
            return out


@pytest.fixture
def pair():
    """(the debugger's socket as dbgfwd holds it, the debugger's end)"""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        far = socket.create_connection(server.getsockname())
        near, _ = server.accept()
    near.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as dbgfwd's listeners set it
    yield near, far
    near.close()
    far.close()


def _pipe(channel):
    return direct._pipe_class(BufferedPipe)(channel)


def _recv_exactly(sock, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "closed early"
        out += chunk
    return bytes(out)


def _nothing_waiting(sock) -> bool:
    try:
        sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)
    except BlockingIOError:
        return True
    return False


def test_bytes_go_straight_to_the_socket_and_the_reader_gives_the_window_back(pair):
    near, far = pair
    channel = _Channel(threshold=50)
    pipe = _pipe(channel)
    seen = []
    pipe.push_to(near, lambda data: seen.append(bytes(data)))
    pipe.feed(b"x" * 100)  # as paramiko's transport thread does
    assert _recv_exactly(far, 100) == b"x" * 100
    assert seen == [b"x" * 100] and len(pipe) == 0 and pipe.direct == 100
    assert channel.counted == [100] and channel.transport.sent == []  # owed, not sent by the transport thread

    got = []
    reader = threading.Thread(target=lambda: got.append(pipe.read(1000)), name="reader")
    reader.start()
    pipe.close()
    reader.join(10)
    assert got == [b""]
    assert channel.transport.sent == [(reader, 100)]  # the reader sent the window adjustment


def test_a_socket_that_takes_part_gets_the_rest_from_the_reader_in_order(pair):
    """More arrives than the debugger's socket holds: it takes part, the reader sends the rest with blocking
    sends, and the debugger gets every byte once, in order."""
    near, far = pair
    near.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    far.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    channel = _Channel()
    pipe = _pipe(channel)
    counted = []
    pipe.push_to(near, lambda data: counted.append(len(data)))
    chunks = [bytes([i]) * (1000 + 37 * i) for i in range(200)]
    total = sum(map(len, chunks))

    def reader():  # the relay's down direction: read the pipe, send with a blocking send
        while True:
            data = pipe.read(256 * 1024)
            if not data:
                near.shutdown(socket.SHUT_WR)
                return
            near.sendall(data)

    def transport():
        for chunk in chunks:
            pipe.feed(chunk)
        pipe.close()

    threads = [threading.Thread(target=reader), threading.Thread(target=transport)]
    for t in threads:
        t.start()
    threads[1].join(10)  # all of it arrived before the debugger read a byte: its socket could not take it all
    received = bytearray()
    while True:
        data = far.recv(65536)
        if not data:
            break
        received += data
    for t in threads:
        t.join(10)
    assert bytes(received) == b"".join(chunks)
    assert 0 < pipe.direct < total  # both ways were taken
    assert sum(counted) == pipe.direct and sum(channel.counted) == pipe.direct


def test_nothing_is_written_directly_while_the_reader_holds_bytes_it_has_not_sent(pair):
    near, far = pair
    pipe = _pipe(_Channel())
    pipe.feed(b"first")  # before the relay starts: buffered
    pipe.push_to(near, lambda data: None)
    held = pipe.read(100)
    assert held == b"first"
    pipe.feed(b"second")  # the reader has not sent "first" yet: this must wait behind it
    assert _nothing_waiting(far) and len(pipe) == len(b"second")
    near.sendall(held)
    assert pipe.read(100) == b"second"  # back in read: whatever it took before was sent
    near.sendall(b"second")
    got = []
    reader = threading.Thread(target=lambda: got.append(pipe.read(100)))
    reader.start()  # the reader comes back for more: nothing is held any longer
    deadline = time.monotonic() + 10
    while pipe._held and time.monotonic() < deadline:
        time.sleep(0.001)
    pipe.feed(b"third")  # nothing held, nothing buffered: straight to the socket
    assert _recv_exactly(far, 16) == b"firstsecondthird" and len(pipe) == 0
    pipe.close()
    reader.join(10)
    assert got == [b""]


def test_after_stop_returns_nothing_more_is_written_to_the_socket(pair):
    near, far = pair
    pipe = _pipe(_Channel())
    stop = pipe.push_to(near, lambda data: None)
    pipe.feed(b"a")
    stop()
    pipe.feed(b"b")
    assert _recv_exactly(far, 1) == b"a" and _nothing_waiting(far)
    assert pipe.read(10) == b"b"


def test_a_socket_that_fails_leaves_the_bytes_to_the_reader(pair):
    """The debugger is gone: the direct write fails, quietly; the bytes wait for the reader, whose own send
    finds the failure and does what the relay does for a debugger that is gone."""
    near, far = pair
    pipe = _pipe(_Channel())
    pipe.push_to(near, lambda data: None)
    near.shutdown(socket.SHUT_WR)  # sends now fail (EPIPE)
    pipe.feed(b"abc")
    pipe.feed(b"def")
    assert pipe.read(10) == b"abcdef" and pipe.direct == 0


def test_closing_the_channel_while_bytes_are_being_written_does_not_deadlock(pair):
    """paramiko closes a channel holding the channel's lock, then takes the buffer's. The transport thread
    writing directly holds the buffer's lock: it must not then wait for the channel's (for the window)."""
    near, far = pair
    channel = _Channel()
    pipe = _pipe(channel)
    writing, closing = threading.Event(), threading.Event()

    def on_sent(data) -> None:  # the transport thread, mid-write, under the buffer's lock
        writing.set()
        assert closing.wait(10)

    def close() -> None:  # another thread closes the channel as paramiko does
        writing.wait(10)
        with channel.lock:
            closing.set()
            pipe.close()

    pipe.push_to(near, on_sent)
    closer = threading.Thread(target=close)
    closer.start()
    feeder = threading.Thread(target=pipe.feed, args=(b"data",))
    feeder.start()
    feeder.join(10)
    closer.join(10)
    assert not feeder.is_alive() and not closer.is_alive(), "deadlock between the channel's and the buffer's locks"
    assert channel.counted == [4]


def test_install_leaves_a_transport_with_channels_alone():
    class Transport:
        pass

    t = Transport()
    assert direct.install(t) is False  # not a paramiko layout it knows: channels are read the usual way
