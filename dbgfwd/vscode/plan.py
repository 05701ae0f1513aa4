"""Where gen-launch gets its ranks: the running session's state, or a plan from the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dbgfwd.errors import NotFoundError
from dbgfwd.plan.layout import DEFAULT_BASE_PORT, PlannedRank, layout
from dbgfwd.plan.ports import assign_local_ports, default_local_base
from dbgfwd.plan.ranksets import filter_ranks
from dbgfwd.plan.ranksets import format_ranks
from dbgfwd.vscode.model import AttachEntry
from dbgfwd.workspace import state
from dbgfwd.workspace.ports import PortMemory


def entries_from_session(workspace: Path) -> list[AttachEntry] | None:
    """The ranks of the session recorded in `workspace`, or None when there is no session file."""
    session = state.read_session(workspace)
    if session is None:
        return None
    return [AttachEntry(rank=r.rank, local_port=r.local_port, node=r.node, local_rank=r.local_rank,
                        remote_root=r.remote_root,
                        program=r.row.get("program") if isinstance(r.row.get("program"), str) else None)
            for r in session.ranks]


def binding_warnings(entries: list[AttachEntry], workspace: Path, local_root: str,
                     remote_root: str | None) -> list[str]:
    """Each distinct "breakpoints will not bind" problem of these ranks, once (see vscode.mapping)."""
    from dbgfwd.vscode.mapping import check

    out: list[str] = []
    for e in entries:
        said = check(workspace, local_root, remote_root if remote_root is not None else e.remote_root,
                     e.remote_root, e.program)
        if said and said not in out:
            out.append(said)
    return out


@dataclass(frozen=True)
class PlanRequest:
    """A plan given on the command line (`gen-launch --ranks N ...`)."""

    world_size: int
    base_port: int = DEFAULT_BASE_PORT
    local_base_port: int | None = None  # None: same as base_port, busy ports skipped
    ranks_per_node: int | None = None
    only: frozenset[int] | None = None


def entries_from_plan(request: PlanRequest, workspace: Path) -> list[AttachEntry]:
    """Lay the ranks out with the port planner, reusing the ports remembered in ports.json."""
    slots = filter_ranks(layout(request.world_size, request.ranks_per_node, request.base_port), request.only)
    strict = request.local_base_port is not None
    local_base = request.local_base_port if strict else default_local_base(request.base_port, False)
    planned = assign_local_ports(slots, local_base, remembered=PortMemory.of(workspace).load(), strict=strict)
    return [AttachEntry(rank=p.rank, local_port=p.local_port, node=p.node, local_rank=p.local_rank)
            for p in planned]


def remember_ports(workspace: Path, entries: list[AttachEntry]) -> None:
    """Save rank -> local port so a later `dbgfwd attach` serves the ports launch.json names."""
    PortMemory.of(workspace).save(PlannedRank(rank=e.rank, node=e.node, node_index=0, local_rank=e.local_rank,
                                              remote_port=0, local_port=e.local_port) for e in entries)


def select(entries: list[AttachEntry], only: frozenset[int] | None) -> list[AttachEntry]:
    if only is None:
        return entries
    chosen = [e for e in entries if e.rank in only]
    if not chosen:
        have = sorted(e.rank for e in entries)
        raise NotFoundError(f"--only matches none of the session's ranks ({_fmt(have)})")
    return chosen


def _fmt(ranks: list[int]) -> str:
    return format_ranks(ranks) or "none"
