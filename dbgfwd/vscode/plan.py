"""Where gen-launch gets its ranks: the running session's state, or a plan from the command line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dbgfwd import planner, state
from dbgfwd.errors import BadFileError, NotFoundError
from dbgfwd.vscode.generate import format_ranks
from dbgfwd.vscode.model import AttachEntry


def _int_field(path: Path, where: str, item: dict, key: str) -> int:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadFileError(path, f"{where} has no valid {key!r} ({value!r})",
                           hint="rerun `dbgfwd attach`, which rewrites it")
    return value


def entries_from_session(path: Path) -> list[AttachEntry] | None:
    """The ranks of the session recorded at `path`, or None when there is no session file.

    Read defensively: the file belongs to another dbgfwd process and may be from another version.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadFileError(path, f"cannot be read ({exc})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        line, col = getattr(exc, "lineno", None), getattr(exc, "colno", None)
        raise BadFileError(path, "is not valid JSON", line, col,
                           hint="rerun `dbgfwd attach`, which rewrites it") from None
    ranks = data.get("ranks") if isinstance(data, dict) else None
    if not isinstance(ranks, list):
        raise BadFileError(path, "has no list of ranks", hint="rerun `dbgfwd attach`, which rewrites it")
    entries = []
    for i, item in enumerate(ranks):
        if not isinstance(item, dict):
            raise BadFileError(path, f"ranks[{i}] is not an object")
        where = f"ranks[{i}]"
        remote_root = item.get("remote_root")
        node = item.get("target_name") or item.get("node")  # where it runs, as attach names it
        entries.append(AttachEntry(
            rank=_int_field(path, where, item, "rank"),
            local_port=_int_field(path, where, item, "local_port"),
            node=node if isinstance(node, str) and node else "?",
            local_rank=item.get("local_rank") if isinstance(item.get("local_rank"), int) else 0,
            remote_root=remote_root if isinstance(remote_root, str) and remote_root else None,
        ))
    return entries


@dataclass(frozen=True)
class PlanRequest:
    """A plan given on the command line (`gen-launch --ranks N ...`)."""

    world_size: int
    base_port: int = planner.DEFAULT_BASE_PORT
    local_base_port: int | None = None  # None: same as base_port, busy ports skipped
    ranks_per_node: int | None = None
    only: frozenset[int] | None = None


def entries_from_plan(request: PlanRequest, workspace: Path) -> list[AttachEntry]:
    """Lay the ranks out with the port planner, reusing the ports remembered in ports.json."""
    slots = planner.filter_ranks(
        planner.layout(request.world_size, request.ranks_per_node, request.base_port), request.only)
    strict = request.local_base_port is not None
    local_base = request.local_base_port if strict else request.base_port
    planned = planner.assign_local_ports(slots, local_base, remembered=_memory(workspace).load(), strict=strict)
    return [AttachEntry(rank=p.rank, local_port=p.local_port, node=p.node, local_rank=p.local_rank)
            for p in planned]


def remember_ports(workspace: Path, entries: list[AttachEntry]) -> None:
    """Save rank -> local port so a later `dbgfwd attach` serves the ports launch.json names."""
    _memory(workspace).save(planner.PlannedRank(rank=e.rank, node=e.node, node_index=0, local_rank=e.local_rank,
                                                remote_port=0, local_port=e.local_port) for e in entries)


def _memory(workspace: Path) -> planner.PortMemory:
    return planner.PortMemory(state.ports_path(Path(workspace)))


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
