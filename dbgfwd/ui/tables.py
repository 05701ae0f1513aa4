"""Rank tables (attach's live view, status, ranks): one renderer for session.json-shaped rows."""

from __future__ import annotations

from typing import Iterable, Mapping

from rich.table import Table
from rich.text import Text

from dbgfwd.ui.console import clean

STATE_STYLES = {
    "planned": "dim", "waiting": "yellow", "ready": "green", "connected": "bold green",
    "reconnecting": "magenta", "failed": "bold red",
}


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def rank_table(rows: Iterable[Mapping], title: str | None = None, show_traffic: bool = True) -> Table:
    """`rows` are RankStatus.as_dict() / session.json rank entries."""
    table = Table(title=Text(clean(title)) if title else None, title_justify="left", show_edge=False, pad_edge=False)
    for col, justify in (("rank", "right"), ("target", "left"), ("local rank", "right"),
                         ("remote", "right"), ("local", "right"), ("state", "left")):
        table.add_column(col, justify=justify)
    if show_traffic:
        table.add_column("clients", justify="right")
        table.add_column("traffic", justify="right")
    table.add_column("detail", overflow="fold")
    for r in rows:
        state = str(r.get("state", ""))
        # Every cell is plain Text: names and reasons come from servers and files, never markup.
        cells = [str(r["rank"]), str(r.get("target_name") or r.get("node", "")), str(r.get("local_rank", "")),
                 str(r.get("remote_port", "")), f"127.0.0.1:{r['local_port']}"]
        row = [Text(clean(c)) for c in cells] + [Text(clean(state), style=STATE_STYLES.get(state, ""))]
        if show_traffic:
            row += [Text(str(r.get("clients", 0))),
                    Text(f"{_size(r.get('bytes_up', 0))} / {_size(r.get('bytes_down', 0))}")]
        row.append(Text(clean(r.get("reason") or "")))
        table.add_row(*row)
    return table
