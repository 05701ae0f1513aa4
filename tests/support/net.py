"""Small socket helpers for test servers."""

from __future__ import annotations

import socket


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
