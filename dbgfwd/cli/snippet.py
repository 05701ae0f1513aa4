"""`dbgfwd snippet`: print code that starts debugpy for this rank, for programs run without dbgfwd-rank."""

from __future__ import annotations

import typer

from dbgfwd import envvars
from dbgfwd.cli import options as o


def _timeout(text: str):
    try:
        from dbgfwd.rank import collectives

        value = collectives.parse_timeout(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if value is None:
        raise typer.BadParameter("the snippet has no 'keep': delete the guard's line from the printed code")
    return value


def snippet(
    base_port: int = o.BasePort,
    wait_rank: int = typer.Option(0, "--wait-rank", min=0, metavar="RANK",
                                  help="this rank waits for a debugger before going on"),
    no_wait: bool = typer.Option(False, "--no-wait", help="no rank waits for a debugger"),
    collective_timeout: str = typer.Option(envvars.COLLECTIVE_TIMEOUT_DEFAULT, "--collective-timeout", metavar="DURATION",
                                           help="torch collective timeout while debugging (e.g. 2h, 90m, 3600), "
                                                "used where dbgfwd is installed in the rank"),
) -> None:
    """Print lines to paste into a program that cannot run under dbgfwd-rank.

    They start debugpy on 127.0.0.1 at base port + local rank, reading the rank from the same
    launcher variables as dbgfwd-rank, make its requests answer in ~1 ms, let one rank wait for the
    debugger and, where dbgfwd is installed in the rank, keep torch collectives from timing out
    while a rank is paused.
    """
    from dbgfwd.templates import render_snippet

    typer.echo(render_snippet(base_port, None if no_wait else wait_rank, _timeout(collective_timeout)), nl=False)


def register(app: typer.Typer) -> None:
    app.command("snippet")(snippet)
