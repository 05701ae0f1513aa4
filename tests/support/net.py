"""Small socket helpers for test servers."""

from __future__ import annotations

import socket
from http.server import ThreadingHTTPServer


def close_listener(sock: socket.socket) -> None:
    """Close a listening socket that another thread may be blocked in accept() on.

    close() alone does not wake that accept(): the kernel keeps the socket listening for as long as
    the call is blocked, a later server can end up on the same ephemeral port, and connections
    meant for it are accepted by the zombie. shutdown() wakes the accept() first.
    """
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def splice(src, dst) -> None:
    """Copy `src` to `dst` until `src` ends, then half-close `dst` (either may be a socket or a provider's stream)."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def free_base_on(addresses: list[str], count: int, tries: int = 200) -> int:
    """A base port whose `count` ports are free on every one of `addresses` (nodes that are loopback addresses
    of this machine, each listening on the same ports): bind checks, from a port the kernel picks."""
    for _ in range(tries):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base > 60000:
            continue
        try:
            for ip in addresses:
                for p in range(base, base + count):
                    with socket.socket() as t:
                        t.bind((ip, p))
            return base
        except OSError:
            continue
    raise AssertionError("no free base port")


class ApiHTTPServer(ThreadingHTTPServer):
    """The test API servers' HTTP server (Kubernetes, AWS). socketserver listens with a backlog of 5: a storm of
    64 port-forward upgrades overflowed it, and the connects the kernel dropped came back a second later (a ~1 s
    straggler in bench.storm, 1.5-3x instead of 1.1-1.25x). A real API server listens with the system's maximum."""

    request_queue_size = socket.SOMAXCONN
    daemon_threads = True
    tls_context = None  # an ssl.SSLContext: serve HTTPS (every real API server does)
    tls_handshakes = tls_resumed = 0  # TLS handshakes done, and how many of them resumed a session

    def finish_request(self, request, client_address) -> None:
        # The TLS handshake runs here, in the connection's own thread: in accept() it would hold up every client
        # behind a slow one.
        if self.tls_context is not None:
            import ssl

            try:
                request = self.tls_context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return
            self.tls_handshakes += 1
            self.tls_resumed += request.session_reused
        super().finish_request(request, client_address)
