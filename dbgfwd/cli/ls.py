"""`dbgfwd ls`: show the targets and ranks a provider finds, before forwarding anything."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dbgfwd import envvars
from dbgfwd.cli import options as o
from dbgfwd.console import console


def show_discovery(opts) -> None:
    from rich.table import Table

    from dbgfwd import providers
    from dbgfwd.console import redact
    from dbgfwd.ranks import slots_for, with_marker_ranks
    from dbgfwd.session import provider_config

    config = provider_config(opts)
    cls = providers.choose(opts.provider, config)
    provider = cls(config)
    try:
        with console.status(f"discovering ({cls.name})..."):
            discovery = provider.discover()
            probed = []
            for t in discovery.targets:
                probed.append(with_marker_ranks(t, provider.probe(t) if t.running and not t.ranks else None))
    finally:
        provider.close()
    slots = slots_for(probed, opts.base_port, opts.ranks_per_node, opts.expected_ranks)
    if console.json:
        console.emit_json({
            "provider": cls.name, "where": redact(discovery.where),
            "targets": [{"key": t.key, "name": t.name, "node_index": t.node_index, "rank_base": t.rank_base,
                         "running": t.running, "status": t.status, "remote_root": t.remote_root,
                         "detail": {k: redact(str(v)) for k, v in t.detail.items()}} for t in probed],
            "ranks": [{"rank": s.rank, "node": s.node, "local_rank": s.local_rank, "remote_port": s.remote_port}
                      for s, _ in slots],
        })
        return
    table = Table(title=f"{cls.name}: looked {redact(discovery.where)}", title_justify="left", show_edge=False)
    for col in ("target", "index", "status", "ranks", "detail"):
        table.add_column(col)
    for t in probed:
        ranks = ",".join(str(s.rank) for s, tt in slots if tt.key == t.key) or "?"
        detail = redact(" ".join(f"{k}={v}" for k, v in t.detail.items()))
        table.add_row(t.name, str(t.node_index), t.status, ranks, detail)
    console.print(table)
    if not probed:
        console.info("nothing found")


@o.with_provider_options
def ls(
    targets: Optional[List[str]] = typer.Argument(None, help="same target specs as `dbgfwd attach`"),
    provider: Optional[str] = typer.Option(None, "--provider", "-p", envvar=envvars.PROVIDER,
                                           help="local, ssh, kubernetes or batch (default: inferred)"),
    base_port: int = o.BasePort,
    ranks_per_node: Optional[int] = o.RanksPerNode,
    workspace: Optional[Path] = o.Workspace,
    json_out: bool = o.Json,
    provider_options: dict = None,  # type: ignore[assignment]
) -> None:
    """List the targets and ranks `dbgfwd attach` would forward, with where each runs."""
    from dbgfwd.session import AttachOptions

    console.json = json_out
    show_discovery(AttachOptions(workspace=o.workspace_of(workspace), provider=provider,
                                 targets=tuple(targets or ()), provider_options=provider_options or {},
                                 base_port=base_port, ranks_per_node=ranks_per_node))


def register(app: typer.Typer) -> None:
    app.command("ls")(ls)
