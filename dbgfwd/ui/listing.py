"""The rendering of a discovery listing (`dbgfwd ls`, `dbgfwd attach --list`)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from dbgfwd.app.discover import Listing
from dbgfwd.ui.console import Console, clean, redact


def show_listing(console: Console, found: Listing) -> None:
    """What `ls` (and `attach --list`) found: a table, or one JSON document with --json."""
    probed = found.targets
    if console.json:
        console.emit_json({
            "provider": found.provider, "where": redact(found.where),
            "targets": [{"key": t.key, "name": t.name, "node_index": t.node_index, "rank_base": t.rank_base,
                         "running": t.running, "status": t.status, "remote_root": t.remote_root,
                         "detail": {k: redact(str(v)) for k, v in t.detail.items()}} for t in probed],
            "ranks": [{"rank": s.rank, "node": s.node, "local_rank": s.local_rank, "remote_port": s.remote_port}
                      for s, _ in found.slots],
        })
        return
    if not probed:
        return  # the caller says "nothing found" as an error (exit 3), naming where it looked
    title = Text(clean(f"{found.provider}: looked {redact(found.where)}"))
    table = Table(title=title, title_justify="left", show_edge=False)
    for col in ("target", "index", "status", "ranks", "detail"):
        table.add_column(col)
    for t in probed:  # names, statuses and details come from servers: plain Text, control characters shown
        ranks = ",".join(map(str, found.ranks_of(t))) or "?"
        detail = redact(" ".join(f"{k}={v}" for k, v in t.detail.items()))
        table.add_row(*(Text(clean(c)) for c in (t.name, t.node_index, t.status, ranks, detail)))
    console.print(table)
