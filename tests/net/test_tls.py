"""SerialTLS: one thread reads a TLS connection while others write it, with no two SSL calls at once.

Without it, a plain SSLSocket read in one thread and written in another broke here within seconds of traffic
("SSLError: [SSL] internal error" from sendall, and the peer's TLSV1_ALERT_INTERNAL_ERROR)."""

from __future__ import annotations

import hashlib
import socket
import struct
import threading

import pytest

from dbgfwd.net.tls import SerialTLS
from tests.support.tlscert import make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_echo(pki):
    """A TLS echo server (one thread per connection does both its reads and its writes: safe), and a connected
    client SSLSocket wrapped in SerialTLS."""
    listener = socket.create_server(("127.0.0.1", 0))
    server_ctx = pki.server_context()
    conns = []

    def serve():
        try:
            raw, _ = listener.accept()
        except OSError:
            return
        with server_ctx.wrap_socket(raw, server_side=True) as conn:
            conns.append(conn)
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    raw = socket.create_connection(listener.getsockname(), timeout=10)
    client = SerialTLS(pki.client_context().wrap_socket(raw, server_hostname="localhost"))
    client.settimeout(None)
    try:
        yield client
    finally:
        client.close()
        listener.close()
        server.join(10)


def _record(tag: int, seq: int) -> bytes:
    payload = hashlib.sha256(struct.pack(">BI", tag, seq)).digest() * (1 + seq % 40)
    return struct.pack(">BII", tag, seq, len(payload)) + payload


def test_a_writer_and_a_pinger_under_one_lock_while_a_reader_reads(tls_echo):
    # The port-forward and SSM pattern: the engine reads; the debugger's bytes and the keepalive pings are written
    # from two other threads under the stream's send lock. Every record must come back whole and in order.
    send_lock = threading.Lock()
    counts = {1: 600, 2: 200}
    expected = {tag: [_record(tag, i) for i in range(n)] for tag, n in counts.items()}
    total = sum(len(r) for rs in expected.values() for r in rs)
    errors: list[BaseException] = []
    got = bytearray()

    def write(tag: int) -> None:
        try:
            for rec in expected[tag]:
                with send_lock:
                    tls_echo.sendall(rec)
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        try:
            while len(got) < total:
                data = tls_echo.recv(65536)
                if not data:
                    break
                got.extend(data)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read), threading.Thread(target=write, args=(1,)),
               threading.Thread(target=write, args=(2,))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert not any(t.is_alive() for t in threads)
    seen = {1: [], 2: []}
    view, off = bytes(got), 0
    while off < len(view):
        tag, seq, n = struct.unpack_from(">BII", view, off)
        rec = view[off:off + 9 + n]
        assert rec == _record(tag, seq)
        seen[tag].append(seq)
        off += 9 + n
    assert seen == {tag: list(range(n)) for tag, n in counts.items()}


def test_a_reader_waiting_for_data_does_not_hold_up_a_writer(tls_echo):
    # A lock held across a blocking SSL_read would leave every writer waiting for bytes that only its own write
    # can cause: the echo below would never come.
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(tls_echo.recv(100)))
    reader.start()
    writer = threading.Thread(target=tls_echo.sendall, args=(b"hello",))
    writer.start()
    writer.join(10)
    reader.join(10)
    assert not writer.is_alive() and not reader.is_alive()
    assert got == [b"hello"]


def test_recv_with_a_timeout_raises_socket_timeout(tls_echo):
    tls_echo.settimeout(0.2)
    with pytest.raises(socket.timeout):
        tls_echo.recv(10)


def test_close_wakes_a_reader_blocked_in_recv(tls_echo):
    outcome: list = []

    def read():
        try:
            outcome.append(tls_echo.recv(10))
        except OSError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    while not reader.is_alive():
        pass
    tls_echo.close()
    reader.join(10)
    assert not reader.is_alive()
    assert outcome and (outcome[0] == b"" or isinstance(outcome[0], OSError))
    with pytest.raises(OSError):
        tls_echo.recv(10)


class _InsideSSL:
    """Stands in for an SSLSocket; recv stays "inside OpenSSL" until released, and send notes any overlap."""

    _closed = False

    def __init__(self, pending: list[bytes] | None = None):
        self.inside = threading.Event()
        self.release = threading.Event()
        self.sent = threading.Event()
        self.overlapped = False
        self.first_read_done = False
        self._pending = list(pending or [])

    def gettimeout(self):
        return None

    def setblocking(self, flag):
        pass

    def pending(self) -> int:
        return len(self._pending[0]) if self._pending else 0

    def recv(self, n):
        if self.first_read_done:
            return self._pending.pop(0)
        self.first_read_done = self.release.is_set()
        self.inside.set()
        self.release.wait(10)
        self.inside.clear()
        return b"a"

    def send(self, data):
        if self.inside.is_set():
            self.overlapped = True
        self.sent.set()
        return len(data)


def test_a_write_waits_while_a_read_is_inside_openssl():
    fake = _InsideSSL()
    tls = SerialTLS(fake)
    reader = threading.Thread(target=tls.recv, args=(10,))
    reader.start()
    assert fake.inside.wait(10)
    writer = threading.Thread(target=tls.sendall, args=(b"abc",))
    writer.start()
    assert not fake.sent.wait(0.3)  # still waiting for the read to leave
    fake.release.set()
    assert fake.sent.wait(10)
    reader.join(10)
    writer.join(10)
    assert not fake.overlapped


def test_recv_hands_over_what_openssl_already_decrypted():
    # Decrypted bytes do not show on the descriptor: a caller polling before its next recv would wait past them.
    fake = _InsideSSL(pending=[b"bc", b"d"])
    fake.release.set()
    tls = SerialTLS(fake)
    assert tls.recv(10) == b"abcd"
