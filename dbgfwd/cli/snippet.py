"""`dbgfwd snippet`: print code that starts debugpy for this rank, for programs run without dbgfwd-rank."""

from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from dbgfwd import envvars, planner
from dbgfwd.errors import PortError, UsageError
from dbgfwd.templates import render_snippet

HELP = (
    "Print Python lines to paste at the top of your program: they start debugpy on 127.0.0.1 at "
    "base port + local rank (read from the same launcher variables as dbgfwd-rank) and let one rank wait "
    "for the debugger."
)


def snippet(
    base_port: Annotated[int, typer.Option(
        "--base-port", envvar=envvars.BASE_PORT, help="debugpy port of local rank 0")
    ] = planner.DEFAULT_BASE_PORT,
    wait_rank: Annotated[int, typer.Option(
        "--wait-rank", help="this rank waits for a debugger before going on")] = 0,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="no rank waits for a debugger")] = False,
) -> None:
    if not 1 <= base_port <= planner.MAX_PORT:
        raise PortError(f"--base-port {base_port} is not a port number", hint="use 1-65535, e.g. 5678")
    if wait_rank < 0:
        raise UsageError(f"--wait-rank {wait_rank} is negative", hint="ranks count from 0")
    typer.echo(render_snippet(base_port, None if no_wait else wait_rank), nl=False)


def register(app: typer.Typer) -> None:
    app.command("snippet", help=HELP)(snippet)
