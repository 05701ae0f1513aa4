"""Rendering of rank tables (attach's live view, status, ranks)."""

from __future__ import annotations

import sys
import threading
from typing import Iterable, Mapping

from rich.table import Table

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
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for col, justify in (("rank", "right"), ("target", "left"), ("local rank", "right"),
                         ("remote", "right"), ("local", "right"), ("state", "left")):
        table.add_column(col, justify=justify)
    if show_traffic:
        table.add_column("clients", justify="right")
        table.add_column("traffic", justify="right")
    table.add_column("detail", overflow="fold")
    for r in rows:
        state = str(r.get("state", ""))
        cells = [str(r["rank"]), str(r.get("target_name") or r.get("node", "")), str(r.get("local_rank", "")),
                 str(r.get("remote_port", "")), f"127.0.0.1:{r['local_port']}",
                 f"[{STATE_STYLES.get(state, '')}]{state}[/]" if state else ""]
        if show_traffic:
            cells += [str(r.get("clients", 0)),
                      f"{_size(r.get('bytes_up', 0))} / {_size(r.get('bytes_down', 0))}"]
        cells.append(str(r.get("reason") or ""))
        table.add_row(*cells)
    return table


class LiveView:
    """A live rank table on a terminal; state-change lines otherwise; one JSON document with --json."""

    def __init__(self, console, emit_json: bool = True) -> None:
        self.console = console
        self._emit_json = emit_json
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._engine = None

    def start(self, engine) -> None:
        self._engine = engine
        rows = [r.as_dict() for r in engine.snapshot()]
        if self.console.json and self._emit_json:
            self.console.emit_json({"provider": engine.provider.name, "ranks": rows})
        self._thread = threading.Thread(target=self._run, daemon=True, name="dbgfwd-ui")
        self._thread.start()

    def _run(self) -> None:
        if self.console.json:
            return
        if self.console.err.is_terminal:
            from rich.live import Live

            with Live(rank_table([]), console=self.console.err, refresh_per_second=4, transient=False) as live:
                while not self._stop.wait(0.25):
                    live.update(rank_table([r.as_dict() for r in self._engine.snapshot()],
                                           title="dbgfwd attach: Ctrl-C to stop"))
            return
        last: dict = {}
        while True:
            for r in self._engine.snapshot():
                key = (r.state, r.planned.local_port, r.planned.remote_port, r.target_name)
                if last.get(r.planned.rank) != key:
                    last[r.planned.rank] = key
                    reason = f" ({r.reason})" if r.reason else ""
                    self.console.info(f"rank {r.planned.rank} {r.target_name}:{r.planned.remote_port} -> "
                                 f"127.0.0.1:{r.planned.local_port} {r.state.value}{reason}")
            sys.stderr.flush()
            if self._stop.wait(0.5):
                break

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
