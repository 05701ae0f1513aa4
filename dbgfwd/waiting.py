"""Waiting for ranks to be ready, read from the session state (never from the debug ports)."""

from __future__ import annotations

import time
from pathlib import Path

from dbgfwd import state
from dbgfwd.errors import NoSessionError, NotFoundError, WaitTimeout


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
            rows = [r for r in session.ranks if ranks is None or int(r["rank"]) in ranks]
            if ranks is not None and session.ranks:
                missing = ranks - {int(r["rank"]) for r in session.ranks}
                if missing and not rows:
                    raise NotFoundError(f"the session has no ranks {sorted(missing)}",
                                        hint="check --ranks against `dbgfwd status`")
            if rows and all(r.get("state") in state.READY_STATES for r in rows):
                if ranks is None or {int(r["rank"]) for r in rows} >= ranks:
                    return rows
        if time.monotonic() >= deadline:
            if session is None:
                raise NoSessionError(f"no attach session appeared in {workspace} within {timeout:g}s",
                                     hint="start `dbgfwd attach` in this workspace")
            waiting = [f"{r['rank']}:{r.get('state')}" for r in rows if r.get("state") not in state.READY_STATES]
            raise WaitTimeout(f"ranks not ready after {timeout:g}s: {', '.join(waiting[:16]) or 'none planned'}",
                              hint="see `dbgfwd status` for why")
        time.sleep(poll)
