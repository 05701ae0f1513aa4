"""`dbgfwd demo`: see the whole idea work on this machine in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dbgfwd.cli import options as o
from dbgfwd.ui.console import console


def demo(
    ranks: int = typer.Option(4, "--ranks", min=1, max=64, help="how many local ranks to start"),
    base_port: int = typer.Option(5678, "--base-port", min=1, max=65535,
                                  help="first debugpy port to try for the ranks"),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", file_okay=False,
                                             help="where to put the demo (default: a new temp folder)"),
    duration: Optional[float] = typer.Option(None, "--duration", min=0,
                                             help="stop by itself after this many seconds"),
    keep: bool = typer.Option(False, "--keep", help="keep the temporary demo workspace when the demo ends"),
    json_out: bool = o.Json,
) -> None:
    """Start N ranks of a small training loop, forward them, and write launch.json.

    Every rank runs under dbgfwd-rank (debugpy on 127.0.0.1); dbgfwd attaches with the local
    provider and writes one attach config per rank and an "all ranks" compound into the demo
    workspace's .vscode/launch.json. Ctrl-C stops the ranks and every forward.
    """
    from dbgfwd.app.demo import DemoOptions, run_demo

    run_demo(DemoOptions(ranks=ranks, workspace=workspace, base_port=base_port, duration=duration,
                         keep=keep), console)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
