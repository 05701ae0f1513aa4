"""`dbgfwd stacks`: where every rank is right now, identical stacks merged into one view."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dbgfwd import envvars
from dbgfwd.cli import complete
from dbgfwd.cli import options as o
from dbgfwd.ui.console import console


@o.with_provider_options
def stacks(
    targets: Optional[List[str]] = typer.Argument(
        None, help="same target specs as `dbgfwd attach` (default: the running attach session's)"),
    provider: Optional[str] = typer.Option(None, "--provider", "-p", envvar=envvars.PROVIDER, autocompletion=complete.providers,
                                           help="local, ssh, kubernetes or batch (default: the session's, "
                                                "else inferred)"),
    base_port: int = o.BasePort,
    ranks_per_node: Optional[int] = o.RanksPerNode,
    only: Optional[str] = typer.Option(None, "--only", metavar="RANKS", help="only these ranks, e.g. 0,2-3"),
    all_threads: bool = typer.Option(False, "--all-threads", help="every thread, not only each rank's main thread"),
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, metavar="SECONDS",
                                  help="how long to wait for each rank's dump; ranks that do not answer are "
                                       "reported, the others shown"),
    workspace: Optional[Path] = o.Workspace,
    json_out: bool = o.Json,
    provider_options: dict = None,  # type: ignore[assignment]
) -> None:
    """Show the Python stack of every rank, taken at nearly the same moment, without stopping the job.

    Works while ranks are blocked in C (a gloo/NCCL collective, a C extension): ranks started under
    dbgfwd-rank dump their stacks from a signal handler; other ranks need py-spy where they run.
    Identical stacks are shown once, headed by their ranks; the smallest group (often the one rank
    that is somewhere else while the others wait) comes first. Innermost frame first, as file:line.

    \b
    Examples:
      dbgfwd stacks                            # the ranks of the attach running in this workspace
      dbgfwd stacks pytorchjob/train -n ml     # any target spec attach takes
      dbgfwd stacks --json | jq '.groups'
    """
    from dbgfwd.app.options import AttachOptions, from_session
    from dbgfwd.app.stacks import collect, group
    from dbgfwd.errors import UnreachableError

    ws = o.workspace_of(workspace)
    given = any(v not in (None, False, ()) for v in (provider_options or {}).values())
    opts = None if (targets or provider or given) else from_session(ws)
    if opts is None:
        opts = AttachOptions(workspace=ws, provider=provider, targets=tuple(targets or ()),
                             provider_options=provider_options or {}, base_port=base_port,
                             ranks_per_node=ranks_per_node)
    name, found = collect(opts, console, timeout)
    chosen = o.rank_set(only)
    if chosen is not None:
        found = [s for s in found if s.rank in chosen]
    if console.json:
        console.emit_json({"provider": name, "ranks": [s.as_dict() for s in found],
                           "groups": [{"ranks": list(g.ranks), "frames": [vars(f) for f in g.frames],
                                       "error": g.error} for g in group(found)]})
    else:
        from dbgfwd.ui.stacks import render

        for line in render(found, all_threads=all_threads):
            console.print(line)
    if found and all(s.error for s in found):
        raise UnreachableError(f"no rank answered ({found[0].error})", hint="see the reasons above")


def register(app: typer.Typer) -> None:
    app.command("stacks")(stacks)
