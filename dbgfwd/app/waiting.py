"""Waiting for ranks to be ready, read from the session state (never from the debug ports)."""

from __future__ import annotations

import time
from pathlib import Path

from dbgfwd import lifecycle
from dbgfwd.errors import NoSessionError, NotFoundError, WaitTimeout
from dbgfwd.workspace import state


def wait_ready(workspace: Path, timeout: float, ranks: frozenset[int] | None = None,
               poll: float = 0.2) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        session = state.read_session(workspace)
        if session is not None and not session.alive:
            raise NoSessionError(f"the attach session in {workspace} is not running (pid {session.pid} is gone)",
                                 hint="start `dbgfwd attach` again")
        rows = []
        if session is not None:
            recorded = session.ranks
            rows = [r for r in recorded if ranks is None or r.rank in ranks]
            if ranks is not None and recorded:
                missing = ranks - {r.rank for r in recorded}
                if missing and not rows:
                    raise NotFoundError(f"the session has no ranks {sorted(missing)}",
                                        hint="check --ranks against `dbgfwd status`")
            if rows and all(r.ready for r in rows) and session.stale_for is None:
                if ranks is None or {r.rank for r in rows} >= ranks:
                    return [dict(r.row) for r in rows]
        if time.monotonic() >= deadline:
            if session is None:
                raise NoSessionError(f"no attach session appeared in {workspace} within {timeout:g}s",
                                     hint="start `dbgfwd attach` in this workspace")
            if session.stale_for is not None:
                raise WaitTimeout(f"the attach (pid {session.pid}) has not updated its state for "
                                  f"{session.stale_for:.0f}s: it is stopped (Ctrl-Z, a suspended laptop) or hung",
                                  hint="resume it (`fg`, or `kill -CONT` its pid) or restart it")
            waiting = [f"{r.rank}:{r.state}" for r in rows if not r.ready]
            exc = WaitTimeout(f"ranks not ready after {timeout:g}s: {', '.join(waiting[:16]) or 'none planned'}",
                              hint="see `dbgfwd status` for why")
            exc.rows = [dict(r.row) for r in rows]
            raise exc
        if lifecycle.wait(poll):
            return []
