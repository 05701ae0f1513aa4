"""Make every debugger request answer in about 1 ms instead of about 44 ms.

debugpy runs its debug adapter in a separate process; the debuggee (pydevd) talks to it over a loopback
TCP connection that pydevd opens with Nagle's algorithm on. pydevd writes each reply in several pieces, so
every reply after the first piece waits for the adapter's delayed ACK (~40 ms on Linux): debugpy issue
2054, fixed in its PR 2066, not in a release as of debugpy 1.8.22. TCP_NODELAY on that connection, inside
the debuggee, removes the wait. Nothing outside the debuggee (client, forward, adapter side) can.

The connection is made by pydevd's `start_client` during `debugpy.listen()`. `prepare()` (before listen)
wraps `start_client` so this connection, and any later one in this process, gets the option when it is
made; `apply()` (after listen) sets it on the connection pydevd holds, whichever way it was made. Both
are best effort: pydevd's internals are not an API, so anything unexpected is logged and skipped, and
the program runs as it would without the fix.
"""

from __future__ import annotations

import functools
import socket
import sys
from typing import Callable

Log = Callable[[str], None]

# pydevd binds start_client by name in both modules (pydevd imports it from pydevd_comm).
_CLIENT_MODULES = ("_pydevd_bundle.pydevd_comm", "pydevd")


def set_nodelay(sock: object) -> bool:
    """Turn Nagle off on a TCP socket; False for anything that is not one (never raises)."""
    try:
        if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
            return False
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return True
    except (OSError, AttributeError, ValueError):
        return False


def has_nodelay(sock: socket.socket) -> bool:
    try:
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    except OSError:
        return False


def _wrap(start_client: Callable) -> Callable:
    @functools.wraps(start_client)
    def start_client_nodelay(*args, **kwargs):
        sock = start_client(*args, **kwargs)
        set_nodelay(sock)
        return sock

    start_client_nodelay.__dbgfwd_nodelay__ = True  # type: ignore[attr-defined]
    return start_client_nodelay


def prepare(log: Log) -> None:
    """Before `debugpy.listen()`: make pydevd open its adapter connections with TCP_NODELAY."""
    try:
        import debugpy.server.api  # noqa: F401  (imports pydevd, which listen() would import anyway)
    except Exception as exc:  # a debugpy without this layout: apply() still looks after listen()
        log(f"TCP_NODELAY: cannot load debugpy's server module ({exc}); trying after listen")
        return
    for name in _CLIENT_MODULES:
        module = sys.modules.get(name)
        original = getattr(module, "start_client", None)
        if original is None:
            log(f"TCP_NODELAY: {name}.start_client not found (debugpy changed?)")
        elif not getattr(original, "__dbgfwd_nodelay__", False):
            module.start_client = _wrap(original)  # type: ignore[union-attr]


def adapter_sockets() -> list[socket.socket]:
    """The sockets pydevd holds to debugpy's adapter (one today; reader and writer share it)."""
    pydevd = sys.modules.get("pydevd")
    getter = getattr(pydevd, "get_global_debugger", None)
    py_db = getter() if callable(getter) else None
    found: list[socket.socket] = []
    for candidate in (getattr(py_db, "_client_socket", None),
                      getattr(getattr(py_db, "writer", None), "sock", None),
                      getattr(getattr(py_db, "reader", None), "sock", None)):
        if isinstance(candidate, socket.socket) and all(candidate is not s for s in found):
            found.append(candidate)
    return found


def apply(log: Log) -> int:
    """After `debugpy.listen()`: set TCP_NODELAY on the adapter connection. Returns how many were set."""
    socks = adapter_sockets()
    if not socks:
        log("TCP_NODELAY: debugpy's adapter connection not found; debugger requests may take ~40 ms")
        return 0
    count = sum(set_nodelay(s) for s in socks)
    log(f"TCP_NODELAY on {count} of {len(socks)} debugpy adapter connection(s)")
    return count
