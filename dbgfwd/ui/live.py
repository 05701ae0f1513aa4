"""attach's live view: a rank table on a terminal, state-change lines otherwise, JSON with --json."""

from __future__ import annotations

import sys
import threading

from dbgfwd.ui.console import clean
from dbgfwd.ui.tables import rank_table, rank_view


class LiveView:
    """A live rank table on a terminal; state-change lines otherwise; one JSON document with --json."""

    def __init__(self, console, emit_json: bool = True, extra: dict | None = None) -> None:
        self.console = console
        self._extra = extra or {}
        self._emit_json = emit_json
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._engine = None

    def start(self, engine) -> None:
        self._engine = engine
        rows = [r.as_dict() for r in engine.snapshot()]
        if self.console.json and self._emit_json:
            self.console.emit_json({"provider": engine.provider.name, "ranks": rows, **self._extra})
        self._thread = threading.Thread(target=self._run, daemon=True, name="dbgfwd-ui")
        self._thread.start()

    def _run(self) -> None:
        if self.console.json:
            return
        if self.console.err.is_terminal:
            from rich.console import Group
            from rich.live import Live
            from rich.text import Text

            with Live(rank_table([]), console=self.console.err, refresh_per_second=4, transient=False) as live:
                while not self._stop.wait(0.25):
                    problems = [Text(f"! {clean(p)}", style="yellow", overflow="fold")
                                for p in self._engine.problems.values() if p]
                    live.update(Group(rank_view([r.as_dict() for r in self._engine.snapshot()],
                                                title="dbgfwd attach: Ctrl-C to stop"), *problems))
            return
        last: dict = {}
        seen = None
        while True:
            version = self._engine.version
            if version == seen:  # nothing changed: no snapshot of every rank (costly at 1024 ranks, twice a second)
                if self._stop.wait(0.5):
                    break
                continue
            seen = version
            changed = []
            for r in self._engine.snapshot():
                key = (r.state, r.planned.local_port, r.planned.remote_port, r.target_name)
                if last.get(r.planned.rank) != key:
                    last[r.planned.rank] = key
                    changed.append(r)
            for line in change_lines(changed):
                self.console.info(line)
            sys.stderr.flush()
            if self._stop.wait(0.5):
                break

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)


GROUP_FROM = 8  # more ranks than this changing to the same state at once are said in one line


def change_lines(changed) -> list[str]:
    """The lines for ranks whose state changed: one per rank, with its ports; when many changed to the same state
    at once (an attach of 1024 ranks becoming ready), one line for them, their ports being in launch.json and
    `dbgfwd status`."""
    from dbgfwd.plan.ranksets import format_ranks

    groups: dict[tuple, list] = {}
    for r in changed:
        groups.setdefault((r.state.value, r.reason), []).append(r)
    lines = []
    for (state, reason), members in groups.items():
        why = f" ({reason})" if reason else ""
        if len(members) > GROUP_FROM:
            ranks = sorted(r.planned.rank for r in members)
            lines.append(f"ranks {format_ranks(ranks)} ({len(ranks)}) {state}{why}")
            continue
        for r in members:
            lines.append(f"rank {r.planned.rank} {r.target_name}:{r.planned.remote_port} -> "
                         f"127.0.0.1:{r.planned.local_port} {state}{why}")
    return lines
