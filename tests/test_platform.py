"""dbgfwd/platform.py: the Linux-only mechanisms, checked against what /proc says."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from dbgfwd import platform

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux mechanisms")


def _pair(family: int, host: str, v6only: bool = True):
    srv = socket.socket(family)
    if family == socket.AF_INET6:
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    srv.bind((host, 0))
    srv.listen()
    client = socket.create_connection(("127.0.0.1" if not v6only else host, srv.getsockname()[1]))
    accepted, _ = srv.accept()
    srv.close()
    return client, accepted


@pytest.mark.parametrize("family,host,v6only", [(socket.AF_INET, "127.0.0.1", True), (socket.AF_INET6, "::1", True),
                                                (socket.AF_INET6, "::", False)], ids=["v4", "v6", "v4-mapped"])
def test_the_peer_of_a_loopback_connection_is_told_by_the_kernel_without_reading_the_socket_table(
        family, host, v6only, monkeypatch):
    """A debugger connecting is checked for its user once per connection: the kernel is asked for that one
    socket (sock_diag), not the whole /proc/net/tcp formatted (~20 ms at a few thousand sockets)."""
    client, accepted = _pair(family, host, v6only)
    with client, accepted:
        monkeypatch.setattr(platform, "tcp_table", lambda: pytest.fail("the socket table was read"))
        assert platform.peer_uid(accepted) == os.getuid()


def test_a_peer_the_kernel_does_not_know_is_looked_up_in_the_table_and_not_trusted():
    assert platform._sock_diag_uid(socket.AF_INET, ("127.0.0.1", 1), ("127.0.0.1", 2)) is None
    client, accepted = _pair(socket.AF_INET, "127.0.0.1")
    with client, accepted:
        peer, mine = accepted.getpeername(), accepted.getsockname()
        assert platform._sock_diag_uid(socket.AF_INET, peer, mine) == os.getuid()
        assert platform._sock_diag_uid(socket.AF_INET, mine, peer) == os.getuid()  # the listener side's own socket
        assert platform._sock_diag_uid(socket.AF_INET, (peer[0], peer[1] + 1), mine) is None


def test_the_listeners_asked_of_the_kernel_are_the_ones_the_socket_table_lists(monkeypatch):
    """An idle local attach checks its ranks' listeners every few seconds: the kernel is asked for its listeners
    only (sock_diag), and says exactly what /proc/net/tcp and tcp6 say, v6 and v4-mapped addresses included."""
    from dbgfwd.rank import markers

    made = []
    try:
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::1"),
                             (socket.AF_INET6, "::"), (socket.AF_INET6, "::ffff:127.0.0.1")):
            s = socket.socket(family)
            s.bind((host, 0))
            s.listen()
            made.append(s)
        client, accepted = _pair(socket.AF_INET, "127.0.0.1")  # a connection is not a listener
        with client, accepted:
            asked = platform.listening_sockets()
            assert asked == markers.listening_sockets(platform.tcp_table())
            ours = {(s.getsockname()[0], s.getsockname()[1]) for s in made}
            assert ours <= asked[0] and (accepted.getsockname()[0], accepted.getsockname()[1]) not in asked[0]
            assert all(asked[1][port] == frozenset({os.getuid()}) for _, port in ours)
            monkeypatch.setattr(platform, "tcp_table", lambda: pytest.fail("the socket table was read"))
            probe = markers.local_probe(sockets=True)
            assert probe.tcp_known and ours <= probe.listening
    finally:
        for s in made:
            s.close()
