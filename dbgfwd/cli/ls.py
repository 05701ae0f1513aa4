"""`dbgfwd ls`: show the targets and ranks a provider finds, before forwarding anything."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dbgfwd import envvars
from dbgfwd.cli import complete
from dbgfwd.cli import options as o
from dbgfwd.ui.console import console


@o.with_provider_options
def ls(
    targets: Optional[List[str]] = typer.Argument(None, help="same target specs as `dbgfwd attach`"),
    provider: Optional[str] = typer.Option(None, "--provider", "-p", envvar=envvars.PROVIDER, autocompletion=complete.providers,
                                           help="local, ssh, kubernetes or batch (default: inferred)"),
    base_port: int = o.BasePort,
    ranks_per_node: Optional[int] = o.RanksPerNode,
    workspace: Optional[Path] = o.Workspace,
    json_out: bool = o.Json,
    provider_options: dict = None,  # type: ignore[assignment]
) -> None:
    """List the targets and ranks `dbgfwd attach` would forward, with where each runs."""
    from dbgfwd.app.discover import discover
    from dbgfwd.app.options import AttachOptions
    from dbgfwd.ui.listing import show_listing

    from dbgfwd.errors import NotFoundError

    found = discover(AttachOptions(workspace=o.workspace_of(workspace), provider=provider,
                                   targets=tuple(targets or ()), provider_options=provider_options or {},
                                   base_port=base_port, ranks_per_node=ranks_per_node), console)
    show_listing(console, found)
    _say_binding(found, o.workspace_of(workspace))
    if not found.targets:  # a script can tell "nothing there" from "found": exit 3, after the JSON document
        raise NotFoundError(f"nothing found: looked {found.where}",
                            hint="start the ranks (dbgfwd-rank), or check the target spec and --base-port")


def _say_binding(found, workspace: Path) -> None:
    """The "breakpoints will not bind" check of attach, from the markers ls read (default mapping)."""
    from dbgfwd.vscode import AttachEntry
    from dbgfwd.vscode.plan import binding_warnings

    entries = [AttachEntry(rank=m.rank, local_port=0, node=key, local_rank=m.local_rank, remote_root=m.cwd or None,
                           program=m.argv[0] if m.argv else None)
               for key, probe in found.probes.items() if probe is not None for m in probe.markers]
    for warning in binding_warnings(entries, workspace, "${workspaceFolder}", None):
        console.warn(warning)


def register(app: typer.Typer) -> None:
    app.command("ls")(ls)
