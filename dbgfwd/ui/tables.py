"""Rank tables (attach's live view, status, ranks): one renderer for session.json-shaped rows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping

from rich.text import Text

from dbgfwd.ui.console import clean

if TYPE_CHECKING:
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


# Columns in the order shown; the ones a narrow terminal drops first have the highest `drop` rank.
# rank, local port and state are never dropped nor cut: they are what the user came for.
_COLUMNS = (  # (name, justify, drop order: 0 = always kept)
    ("rank", "right", 0), ("target", "left", 5), ("local rank", "right", 3), ("remote", "right", 4),
    ("local", "right", 0), ("state", "left", 0), ("clients", "right", 2), ("traffic", "right", 1),
)
_GAP = 3  # " │ " between columns


def _cells(r: Mapping, show_traffic: bool) -> dict[str, Text]:
    state = str(r.get("state", ""))
    # Every cell is plain Text: names and reasons come from servers and files, never markup.
    cells = {"rank": str(r["rank"]), "target": str(r.get("target_name") or r.get("node", "")),
             "local rank": str(r.get("local_rank", "")), "remote": str(r.get("remote_port", "")),
             "local": f"127.0.0.1:{r['local_port']}"}
    out = {k: Text(clean(v)) for k, v in cells.items()}
    out["state"] = Text(clean(state), style=STATE_STYLES.get(state, ""))
    if show_traffic:
        out["clients"] = Text(str(r.get("clients", 0)))
        out["traffic"] = Text(f"{_size(r.get('bytes_up', 0))} / {_size(r.get('bytes_down', 0))}")
    return out


class RankTable:
    """A rank table that fits the width it is drawn at: the less useful columns go first, the target name is
    shortened with an ellipsis, and each rank's detail (a failure reason, in full) is printed below the
    table when it does not fit beside it. Rank, local port and state are always whole."""

    def __init__(self, rows: Iterable[Mapping], title: str | None = None, show_traffic: bool = True):
        self.rows = [dict(r) for r in rows]
        self.title = title
        self.show_traffic = show_traffic

    def _table(self, widths: dict[str, int], cells: list[dict[str, Text]], details: bool) -> Table:
        from rich.table import Table  # here: `status` of many settled ranks prints no table (~30 ms to import)

        table = Table(title=Text(clean(self.title)) if self.title else None, title_justify="left",
                      show_edge=False, pad_edge=False)
        for name, justify, _ in _COLUMNS:
            if name in widths:
                table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis", width=widths[name])
        if details:
            table.add_column("detail", overflow="fold")
        for row, c in zip(self.rows, cells):
            line = [c[n] for n in widths]
            if details:
                line.append(Text(clean(row.get("reason") or "")))
            table.add_row(*line)
        return table

    def __rich_console__(self, console, options):
        width = options.max_width
        cells = [_cells(r, self.show_traffic) for r in self.rows]
        natural = {n: max([len(n)] + [c[n].cell_len for c in cells])
                   for n, _, _ in _COLUMNS if self.show_traffic or n not in ("clients", "traffic")}

        def need(cols: dict[str, int]) -> int:
            return sum(cols.values()) + _GAP * (len(cols) - 1)

        reasons = [r for r in self.rows if r.get("reason")]
        longest = max((len(clean(r["reason"])) for r in reasons), default=0)
        if need(natural) + (_GAP + longest if reasons else 0) <= width:
            yield self._table(natural, cells, details=bool(reasons))
            return
        widths = dict(natural)
        for name, _, _ in sorted((c for c in _COLUMNS if c[2]), key=lambda c: c[2]):
            if name == "target":
                break  # the target is shortened (with an ellipsis) rather than dropped
            if need(widths) <= width:
                break
            widths.pop(name, None)
        if need(widths) > width:
            widths["target"] = max(6, widths["target"] - (need(widths) - width))
        if need(widths) > width:  # very narrow: the local port alone (always on 127.0.0.1 anyway)
            for c in cells:
                c["local"] = Text(c["local"].plain.rsplit(":", 1)[-1])
            widths["local"] = max(5, max(c["local"].cell_len for c in cells))
            widths["target"] = max(4, widths["target"] - max(0, need(widths) - width))
        yield self._table(widths, cells, details=False)
        for r in reasons:  # in full, below: the reason is what the user needs to act on
            yield Text(f"rank {r['rank']}: {clean(r['reason'])}", overflow="fold")


def rank_table(rows: Iterable[Mapping], title: str | None = None, show_traffic: bool = True) -> RankTable:
    """`rows` are RankStatus.as_dict() / session.json rank entries."""
    return RankTable(rows, title, show_traffic)


SUMMARY_OVER = 32  # more ranks than this: a line per state, then only the ranks worth a look
SHOWN_ROWS = 16  # at most this many of those in the summary's table
_STATE_ORDER = ("failed", "reconnecting", "waiting", "planned", "ready", "connected")


def _worth_a_look(r: Mapping) -> bool:
    """A rank with a debugger on it, or one that is not fine (failed, holding clients, waiting with a reason)."""
    state = r.get("state")
    return state in ("failed", "reconnecting", "connected") or (state == "waiting" and bool(r.get("reason")))


class RankSummary:
    """Many ranks at a glance: one line per state with its rank ranges, then a table of the ranks worth a
    look (a debugger on them, or a problem) up to SHOWN_ROWS; `dbgfwd status --all` shows every row."""

    def __init__(self, rows: Iterable[Mapping], title: str | None = None, show_traffic: bool = True):
        self.rows = [dict(r) for r in rows]
        self.title = title
        self.show_traffic = show_traffic

    def __rich_console__(self, console, options):
        from dbgfwd.plan.ranksets import format_ranks

        if self.title:
            yield Text(clean(self.title))
        by_state: dict[str, list[int]] = {}
        for r in self.rows:
            by_state.setdefault(str(r.get("state", "")), []).append(int(r["rank"]))
        order = [s for s in _STATE_ORDER if s in by_state] + sorted(set(by_state) - set(_STATE_ORDER))
        for state in order:
            line = Text(f"{clean(state):<13}", style=STATE_STYLES.get(state, ""))
            line.append(f"{len(by_state[state]):>6}  ranks {format_ranks(by_state[state]).replace(',', ', ')}")
            line.no_wrap, line.overflow = True, "ellipsis"
            yield line
        worth = [r for r in self.rows if _worth_a_look(r)]
        worth.sort(key=lambda r: (_STATE_ORDER.index(r["state"]) if r.get("state") in _STATE_ORDER else 99,
                                  int(r["rank"])))
        if worth:
            yield RankTable(worth[:SHOWN_ROWS], show_traffic=self.show_traffic)
        more = len(worth) - SHOWN_ROWS
        yield Text(f"{len(self.rows)} ranks" + (f"; {more} more worth a look" if more > 0 else "") +
                   ": every rank with `dbgfwd status --all`", style="dim")


def rank_view(rows: Iterable[Mapping], title: str | None = None, show_traffic: bool = True,
              full: bool = False) -> RankTable | RankSummary:
    """The whole table for a few ranks (or when `full`), the summary for many."""
    rows = list(rows)
    if full or len(rows) <= SUMMARY_OVER:
        return RankTable(rows, title, show_traffic)
    return RankSummary(rows, title, show_traffic)
