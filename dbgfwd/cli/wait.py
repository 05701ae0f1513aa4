"""`dbgfwd wait`: block until ranks are ready (what the VS Code preLaunchTask runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dbgfwd.cli import options as o
from dbgfwd.ui.console import console


def wait(
    timeout: float = typer.Option(120.0, "--timeout", min=0, help="give up after this many seconds"),
    ranks: Optional[str] = typer.Option(None, "--ranks", metavar="RANKS", help="only these ranks, e.g. 0,2-3"),
    workspace: Optional[Path] = o.Workspace,
    json_out: bool = o.Json,
) -> None:
    """Exit 0 once every (chosen) rank of the running attach is ready; exit 7 on timeout.

    Readiness comes from the attach process (markers and listening sockets read out of band);
    this command never connects to a debug port.
    """
    from dbgfwd import lifecycle
    from dbgfwd.app.waiting import wait_ready
    from dbgfwd.errors import DbgfwdError

    try:
        rows = wait_ready(o.workspace_of(workspace), timeout, o.rank_set(ranks))
    except DbgfwdError as exc:
        if json_out:  # a script still gets a document saying why (the error line goes to stderr)
            console.emit_json({"ready": False, "exit_code": int(exc.code), "error": exc.message,
                               "ranks": getattr(exc, "rows", [])})
        raise
    if lifecycle.stop_requested():
        return
    if json_out:
        console.emit_json({"ready": True, "ranks": rows})
    else:
        console.info(f"{len(rows)} rank(s) ready")


def register(app: typer.Typer) -> None:
    app.command("wait")(wait)
