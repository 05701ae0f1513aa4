"""`dbgfwd ranks N`: show the per-rank port plan without forwarding anything."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dbgfwd.cli import options as o
from dbgfwd.ui.console import console


def ranks(
    count: int = typer.Argument(..., min=1, help="how many ranks the job has (world size)"),
    base_port: int = o.BasePort,
    local_base_port: Optional[int] = o.LocalBasePort,
    ranks_per_node: Optional[int] = typer.Option(None, "--ranks-per-node", min=1,
                                                 help="ranks per node (default: all on one node)"),
    only: Optional[str] = o.Only,
    save: bool = typer.Option(False, "--save", help="remember these local ports in the workspace"),
    workspace: Optional[Path] = o.Workspace,
    json_out: bool = o.Json,
) -> None:
    """Plan the port map: rank -> node, local rank, remote port (base + local rank), local port.

    Local ports are deterministic (local base + rank when free), skip ports in use, and are stable:
    ports remembered in this workspace (by `attach` or `--save`) are reused.
    """
    from dbgfwd.plan.layout import layout
    from dbgfwd.plan.ports import assign_local_ports, default_local_base, port_is_free
    from dbgfwd.plan.ranksets import filter_ranks
    from dbgfwd.ui.tables import rank_table
    from dbgfwd.workspace import state
    from dbgfwd.workspace.ports import PortMemory

    ws = o.workspace_of(workspace)
    slots = filter_ranks(layout(count, ranks_per_node, base_port), o.rank_set(only))
    memory = PortMemory.of(ws)
    session = state.read_session(ws)
    own = {}
    if session is not None and session.alive:  # ports held by our own running attach are ours, not busy
        own = {r.rank: r.local_port for r in session.ranks}

    def is_free(port: int) -> bool:
        return port in own.values() or port_is_free(port)

    remembered = {**memory.load(), **own}
    local_base = local_base_port or default_local_base(base_port, False)
    planned = assign_local_ports(slots, local_base, remembered, is_free=is_free,
                                         strict=local_base_port is not None)
    if save:
        memory.save(planned)
    if json_out:
        console.emit_json({"base_port": base_port, "ranks": [p.as_dict() for p in planned]})
        return
    console.print(rank_table([p.as_dict() for p in planned], show_traffic=False))


def register(app: typer.Typer) -> None:
    app.command("ranks")(ranks)
