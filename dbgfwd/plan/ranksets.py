"""Rank sets as users write them (`--only 0,2-3`), and narrowing a plan to one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from dbgfwd.errors import UsageError

if TYPE_CHECKING:  # not at run time: `status` formats rank ranges without loading the layout (and providers)
    from dbgfwd.plan.layout import RankSlot


def format_ranks(ranks: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (the form `--only` and `dbgfwd wait --ranks` accept)."""
    out, ordered = [], sorted(set(ranks))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


def parse_rank_set(text: str) -> frozenset[int]:
    """'0,2-3,8' -> {0, 2, 3, 8}. Raises UsageError naming the bad piece."""
    out: set[int] = set()
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        try:
            if "-" in piece:
                lo_s, hi_s = piece.split("-", 1)
                lo, hi = int(lo_s), int(hi_s)
                if lo < 0 or hi < lo:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                value = int(piece)
                if value < 0:
                    raise ValueError
                out.add(value)
        except ValueError:
            raise UsageError(f"bad rank list piece {piece!r} in {text!r}",
                             hint="use ranks and ranges like 0,2-3") from None
    if not out:
        raise UsageError(f"empty rank list {text!r}", hint="use ranks and ranges like 0,2-3")
    return frozenset(out)


def filter_ranks(slots: Sequence[RankSlot], only: frozenset[int] | None) -> list[RankSlot]:
    if only is None:
        return list(slots)
    known = {s.rank for s in slots}
    missing = sorted(only - known)
    if missing and not (only & known):
        raise UsageError(f"--only names ranks {_fmt(missing)} but the plan has ranks {_fmt(sorted(known))}")
    return [s for s in slots if s.rank in only]


def _fmt(ranks: Sequence[int]) -> str:
    return ",".join(map(str, ranks[:10])) + ("..." if len(ranks) > 10 else "")
