"""The merged view of `dbgfwd stacks`: identical stacks once, headed by their ranks, odd ones out first."""

from __future__ import annotations

from rich.text import Text

from dbgfwd.app.stacks import RankStack, StackGroup, group
from dbgfwd.ui.console import clean
from dbgfwd.plan.ranksets import format_ranks


def rank_set_text(ranks: tuple[int, ...]) -> str:
    """'ranks 0-2, 5 (4)', 'rank 3 (1)'."""
    label = format_ranks(list(ranks)).replace(",", ", ")
    return f"{'ranks' if len(ranks) > 1 else 'rank'} {label} ({len(ranks)})"


def render(stacks: list[RankStack], all_threads: bool = False) -> list[Text]:
    out: list[Text] = []
    by_rank = {s.rank: s for s in stacks}
    groups = group(stacks)
    for i, g in enumerate(groups):
        head = Text(rank_set_text(g.ranks), style="bold")
        if len(groups) > 1 and i == 0 and len(g.ranks) < len(stacks) / 2:
            head.append("  <- differs from the others", style="bold yellow")
        out.append(head)
        if g.error is not None:
            out.append(Text(clean(f"  no stack: {g.error}"), style="red"))
        else:
            out.extend(_frames(g))
        first = by_rank[g.ranks[0]]
        others = len(first.threads) - 1
        if all_threads:
            main = first.main()
            for t in first.threads:
                if t is main:
                    continue
                out.append(Text(f"  thread 0x{t.id:x} (of rank {first.rank})", style="dim"))
                out.extend(_frames(StackGroup(g.ranks, tuple(t.frames)), indent="    "))
        elif others > 0:
            out.append(Text(f"  (+{others} other thread{'s' if others != 1 else ''}: --all-threads)", style="dim"))
        out.append(Text(""))
    return out


def _frames(g: StackGroup, indent: str = "  ") -> list[Text]:
    lines = []
    for depth, f in enumerate(g.frames):
        # file:line first, so terminals and editors can open it; the innermost frame stands out.
        line = Text(indent)
        line.append(clean(f"{f.file}:{f.line}"), style="bold cyan" if depth == 0 else "cyan")
        line.append(clean(f" in {f.function}"), style="bold" if depth == 0 else "")
        lines.append(line)
    if not g.frames:
        lines.append(Text(f"{indent}(no Python frames)", style="dim"))
    return lines
