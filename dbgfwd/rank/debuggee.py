"""Start debugpy inside a rank the way dbgfwd wants it: loopback, and with ~1 ms debugger requests.

Shared by dbgfwd-rank and anything else that starts debugpy in a rank; imports debugpy only when called.
"""

from __future__ import annotations

import contextlib
import os
import types
from typing import Callable, Iterator

from dbgfwd.rank import nodelay

Log = Callable[[str], None]
ADAPTER_PATH_ENV = "DBGFWD_DEBUGPY_PATH"  # read by dbgfwd/rank/adapter/__main__.py: where the rank's debugpy is


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
        with guarded_adapter(log):
            debugpy.listen((host, port))
    except Exception as exc:  # debugpy raises RuntimeError wrapping the bind error
        raise ListenError(str(exc)) from exc
    return nodelay.apply(log)


@contextlib.contextmanager
def guarded_adapter(log: Log) -> Iterator[None]:
    """During `debugpy.listen()`: have it start its adapter process through `dbgfwd.rank.adapter`, which keeps
    one connection that dies during its setup from ending the adapter's accept loop (a debugpy bug: after it,
    the port accepts connections and never answers one). debugpy runs `python <dirname(adapter.__file__)>
    <args>`; the directory is swapped for dbgfwd's for the duration of the call. Best effort, like the
    TCP_NODELAY fix: a debugpy laid out otherwise gets its own adapter, unguarded, and a line in the log."""
    import debugpy

    try:
        import debugpy.server.api as api
    except Exception as exc:  # listen() will say what is wrong with this debugpy
        log(f"adapter guard: cannot load debugpy's server module ({exc}); skipped")
        yield
        return
    real = getattr(api, "adapter", None)
    if not getattr(real, "__file__", None):
        log("adapter guard: debugpy's server module has no adapter to wrap (debugpy changed?); skipped")
        yield
        return
    import dbgfwd.rank.adapter as shim

    stand_in = types.SimpleNamespace(__file__=shim.__file__)
    env_before = os.environ.get(ADAPTER_PATH_ENV)
    os.environ[ADAPTER_PATH_ENV] = os.path.dirname(os.path.dirname(os.path.abspath(debugpy.__file__)))
    api.adapter = stand_in
    try:
        yield
    finally:
        if getattr(api, "adapter", None) is stand_in:
            api.adapter = real
        if env_before is None:
            os.environ.pop(ADAPTER_PATH_ENV, None)
        else:
            os.environ[ADAPTER_PATH_ENV] = env_before


def wait_for_client() -> None:
    import debugpy

    debugpy.wait_for_client()
