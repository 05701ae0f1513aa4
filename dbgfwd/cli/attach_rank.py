"""`dbgfwd attach-rank`: have the running job session attach the debugger to more ranks."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dbgfwd.cli import options as o
from dbgfwd.ui.console import console


def attach_rank(
    ranks: str = typer.Argument(..., metavar="ranks", help="ranks to attach, e.g. 5 or 4-7,12"),
    workspace: Optional[Path] = o.Workspace,
    json_out: bool = o.Json,
) -> None:
    """Attach the debugger to more ranks, under the "dbgfwd: job" session already running in VS Code.

    For big jobs started with `attach --job-ranks 0` (rank 0 attached at once, the others on demand).
    Each rank appears as a child session of "dbgfwd: job" as soon as it is ready; asking again for a rank
    whose session you stopped attaches it again.

    \b
    Examples:
      dbgfwd attach-rank 5
      dbgfwd attach-rank 8-15 --json
    """
    from dbgfwd.app.jobsession import request_ranks
    from dbgfwd.errors import NoSessionError
    from dbgfwd.workspace import state

    ws = o.workspace_of(workspace)
    wanted = sorted(o.rank_set(ranks))
    session = state.read_session(ws)
    if session is None or not session.alive:
        raise NoSessionError(f"no running `dbgfwd attach` in {ws}", hint="start `dbgfwd attach` first")
    port = session.data.get("job_port")
    if not port:
        raise NoSessionError("the running attach serves no job session (started with --no-job-session)",
                             hint="restart it without --no-job-session")
    body = request_ranks(int(port), wanted)
    if console.json:
        console.emit_json(body)
        return
    announced = body.get("announced") or []
    for rank, st in sorted((body.get("states") or {}).items(), key=lambda kv: int(kv[0])):
        if int(rank) in announced:
            console.info(f"rank {rank}: attaching (a child session of \"dbgfwd: job\")")
        elif st == "connected":
            console.info(f"rank {rank}: a debugger is already connected to it")
        else:
            console.info(f"rank {rank}: {st}; it is attached as soon as it is ready")


def register(app: typer.Typer) -> None:
    app.command("attach-rank")(attach_rank)
