"""What `dbgfwd attach --inject` did to each rank: a table, then one line for each process it left alone."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from dbgfwd.ui.console import Console, clean

STATE_WORDS = {"injected": "injected", "ready": "already debuggable", "pending": "pending", "failed": "failed",
               "skipped": "skipped", "injectable": "would inject"}
STATE_STYLES = {"injected": "green", "ready": "green", "pending": "yellow", "failed": "bold red",
                "skipped": "yellow", "injectable": "cyan"}


def show_inject(console: Console, results, dry_run: bool = False) -> None:
    """Per rank: where, pid, port, what happened and what was applied (or why not)."""
    if console.json:
        return  # part of the command's one JSON document
    rows = sorted((r for res in results for r in res.ranks), key=lambda r: (r.get("rank") is None, r.get("rank") or 0))
    if rows:
        title = "dbgfwd: ranks that would be injected" if dry_run else "dbgfwd: debugpy injected into running ranks"
        table = Table(title=Text(title), title_justify="left", show_edge=False)
        for col, justify in (("rank", "right"), ("target", "left"), ("pid", "right"), ("port", "right"),
                             ("result", "left"), ("took", "right"), ("detail", "left")):
            table.add_column(col, justify=justify, overflow="fold")
        for r in rows:
            state = str(r.get("state", ""))
            detail = r.get("reason") or ", ".join(r.get("applied") or ())
            if r.get("warnings"):
                detail += "; " + "; ".join(r["warnings"])
            if dry_run and state == "injectable" and r.get("needs_debugpy"):
                detail = "its Python has no debugpy: dbgfwd would bring its own"
            took = f"{r['took']:.1f}s" if r.get("took") is not None else ""
            table.add_row(*(Text(clean(str(c))) for c in (r.get("rank", "?"), r.get("target", ""), r["pid"],
                                                          r.get("port") or "")),
                          Text(STATE_WORDS.get(state, state), style=STATE_STYLES.get(state, "")),
                          Text(took), Text(clean(detail)))
        console.print(table)
    for res in results:
        if res.error:
            console.warn(f"{res.target}: {res.error}")
        if res.ranks and console.verbosity < 1:
            continue  # processes the pattern also matched: only when they explain why nothing was found, or at -v
        for o in res.others:
            console.info(f"  not injected: pid {o['pid']} on {res.target} ({clean(o['command'][:80])}): {o['reason']}")
