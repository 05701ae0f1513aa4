"""`dbgfwd status`: what the running attach in this workspace is doing."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dbgfwd.cli import options as o
from dbgfwd.ui.console import console


def status(workspace: Optional[Path] = o.Workspace, json_out: bool = o.Json,
           every_rank: bool = typer.Option(False, "--all", "-a",
                                           help="a row for every rank even when there are many (above 32, "
                                                "the default is a line per state and the ranks worth a look)"),
           ) -> None:
    """Show every rank's target, ports, state and traffic from the running `dbgfwd attach`."""
    from dbgfwd.errors import NoSessionError
    from dbgfwd.workspace import state

    ws = o.workspace_of(workspace)
    session = state.read_session(ws)
    if session is None or not session.alive:
        stale = " (its attach process is gone)" if session is not None else ""
        raise NoSessionError(f"no running attach session in {ws}{stale}",
                             hint="start one with `dbgfwd attach`")
    stale = session.stale_for
    if json_out:
        console.emit_json({**session.data, "stale_for": stale})
    else:
        from dbgfwd.ui.tables import rank_view

        d = session.data
        console.print(rank_view([r.row for r in session.ranks], full=every_rank,
                                title=f"dbgfwd attach ({d.get('provider')}), pid {session.pid}"))
        if d.get("launch_json_problem"):
            console.warn(str(d["launch_json_problem"]))
    if stale is not None:  # what the table shows is old news: say so, and do not exit 0
        raise NoSessionError(f"the attach (pid {session.pid}) has not updated its state for {stale:.0f}s: it is "
                             "stopped (Ctrl-Z, a suspended laptop) or hung, and its forwards do not answer",
                             hint="resume it (`fg`, or `kill -CONT` its pid) or restart it")


def register(app: typer.Typer) -> None:
    app.command("status")(status)
