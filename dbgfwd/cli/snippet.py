"""`dbgfwd snippet`: print code that starts debugpy for this rank, for programs run without dbgfwd-rank."""

from __future__ import annotations

import typer

from dbgfwd.cli import options as o
from dbgfwd.templates import render_snippet


def snippet(
    base_port: int = o.BasePort,
    wait_rank: int = typer.Option(0, "--wait-rank", min=0, metavar="RANK",
                                  help="this rank waits for a debugger before going on"),
    no_wait: bool = typer.Option(False, "--no-wait", help="no rank waits for a debugger"),
) -> None:
    """Print lines to paste into a program that cannot run under dbgfwd-rank.

    They start debugpy on 127.0.0.1 at base port + local rank, reading the rank from the same
    launcher variables as dbgfwd-rank, and let one rank wait for the debugger.
    """
    typer.echo(render_snippet(base_port, None if no_wait else wait_rank), nl=False)


def register(app: typer.Typer) -> None:
    app.command("snippet")(snippet)
