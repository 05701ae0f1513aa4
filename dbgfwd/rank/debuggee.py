"""Start debugpy inside a rank the way dbgfwd wants it: loopback, and with ~1 ms debugger requests.

Shared by dbgfwd-rank and anything else that starts debugpy in a rank; imports debugpy only when called.
"""

from __future__ import annotations

from typing import Callable

from dbgfwd.rank import nodelay

Log = Callable[[str], None]


class ListenError(RuntimeError):
    """debugpy could not listen (the port is taken, or the address is not ours)."""


def listen(host: str, port: int, *, sub_process: bool = False, log: Log = lambda msg: None) -> int:
    """`debugpy.listen((host, port))` with TCP_NODELAY on debugpy's own connection; how many connections got
    TCP_NODELAY. ImportError: no debugpy."""
    import debugpy

    nodelay.prepare(log)
    # debugpy's own default is True: every child (each DataLoader worker, each `subprocess.run` of a tool)
    # would connect to the adapter and wait for a debugger session of its own. Only on request.
    debugpy.configure(subProcess=sub_process)
    try:
        debugpy.listen((host, port))
    except Exception as exc:  # debugpy raises RuntimeError wrapping the bind error
        raise ListenError(str(exc)) from exc
    return nodelay.apply(log)


def wait_for_client() -> None:
    import debugpy

    debugpy.wait_for_client()
