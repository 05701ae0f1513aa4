"""Run debugpy's adapter so that one bad connection cannot end its accept loop.

debugpy (1.8.22, and its main branch as of 2026-12) sets up each debugger connection inside the thread that
accepts them, and nothing catches an error there. A connection that is already gone when the adapter greets
it (reset, or closed at once) makes that greeting raise, the accept thread ends, and the port keeps accepting
TCP connections (the kernel does that) that nobody ever answers: every later debugger waits forever on its
`initialize`, until the job is restarted. Here each connection's setup is guarded: the failed connection is
closed, and the adapter goes on accepting.

Self-contained on purpose: this runs in the adapter's process, where only debugpy is needed. Anything
unexpected skips the guard and runs the adapter as debugpy would.
"""

import os
import runpy
import sys

_PATH_ENV = "DBGFWD_DEBUGPY_PATH"  # where the rank imported debugpy from (dbgfwd.rank.debuggee sets it)


def _guard(log_exception) -> None:
    from debugpy.common import sockets

    serve = sockets.serve

    def guarded_serve(name, handler, *args, **kwargs):
        def guarded_handler(sock):
            try:
                return handler(sock)
            except Exception:
                log_exception(f"dbgfwd: a {name} connection failed while it was being set up; closed it, "
                              "still accepting")
                try:
                    sock.close()
                except OSError:
                    pass
                return None

        return serve(name, guarded_handler, *args, **kwargs)

    sockets.serve = guarded_serve


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        sys.path.pop(0)  # this directory (absent under PYTHONSAFEPATH): nothing is imported from it
    where = os.environ.pop(_PATH_ENV, "")
    if where:
        sys.path.insert(0, where)
    import debugpy  # noqa: F401  (the rank's own debugpy, so the adapter's __main__ leaves sys.path alone)
    import debugpy.adapter

    try:
        from debugpy.common import log

        _guard(lambda msg: log.swallow_exception(msg, level="warning"))
    except Exception:  # debugpy changed: run its adapter unguarded
        pass
    sys.argv[0] = os.path.dirname(debugpy.adapter.__file__)
    runpy.run_path(sys.argv[0], run_name="__main__")


main()
