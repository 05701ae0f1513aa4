"""The port planner: which local port serves which rank, deterministically and stably.

Remote port of a rank = base port + local rank (what the rank launcher listens on).
Local port of a rank  = the port remembered for it in this workspace (`.dbgfwd/ports.json`) if that
is still usable, else local base + global rank if free, else the next free port above the plan.
Remembering means launch.json written yesterday still points at the right ports today.
"""

from __future__ import annotations

import errno
import json
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from dbgfwd.errors import BadFileError, PortError, UsageError
from dbgfwd.fsutil import atomic_write_text

MAX_PORT = 65535
DEFAULT_BASE_PORT = 5678


@dataclass(frozen=True)
class RankSlot:
    """A rank before it has a local port."""

    rank: int  # global rank
    node: str  # target name ("worker-1", "node03", "localhost")
    node_index: int
    local_rank: int
    remote_port: int
    target_key: str = ""


@dataclass(frozen=True)
class PlannedRank(RankSlot):
    local_port: int = 0

    def as_dict(self) -> dict:
        return {"rank": self.rank, "node": self.node, "node_index": self.node_index,
                "local_rank": self.local_rank, "remote_port": self.remote_port,
                "local_port": self.local_port, "target": self.target_key}


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


def layout(world_size: int, ranks_per_node: int | None, base_port: int,
           node_names: Sequence[str] | None = None) -> list[RankSlot]:
    """Slots for `world_size` ranks laid out node-major: rank = node * ranks_per_node + local rank."""
    if world_size < 1:
        raise UsageError(f"rank count must be at least 1, got {world_size}")
    rpn = ranks_per_node or world_size
    if rpn < 1:
        raise UsageError(f"ranks per node must be at least 1, got {rpn}")
    if base_port < 1 or base_port + rpn - 1 > MAX_PORT:
        raise PortError(f"remote ports {base_port}-{base_port + rpn - 1} do not fit in 1-{MAX_PORT}",
                        hint="choose a lower --base-port")
    slots = []
    for rank in range(world_size):
        node_index, local = divmod(rank, rpn)
        if node_names and node_index < len(node_names):
            node = node_names[node_index]
        else:
            node = f"node{node_index}"
        slots.append(RankSlot(rank=rank, node=node, node_index=node_index, local_rank=local,
                              remote_port=base_port + local, target_key=node))
    return slots


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Can a listener bind host:port right now? (Binds and closes; never connects anywhere.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                return False
            raise
    return True


def assign_local_ports(
    slots: Iterable[RankSlot],
    local_base: int,
    remembered: Mapping[int, int] | None = None,
    is_free: Callable[[int], bool] = port_is_free,
    reserved: Iterable[int] = (),
    strict: bool = False,
    taken: Iterable[int] = (),
) -> list[PlannedRank]:
    """Give every slot a local port.

    `remembered`: rank -> port from earlier runs (kept when still free). `reserved`: ports never
    handed out (e.g. the ranks' own ports when they run on this machine). `taken`: ports already
    serving other ranks of this session. `strict` (an explicit --local-base-port): local base +
    rank must be free, else PortError naming the port.
    """
    remembered = dict(remembered or {})
    slots = sorted(slots, key=lambda s: s.rank)
    reserved_set = set(reserved)
    used: set[int] = set(taken)
    out: list[PlannedRank] = []
    if slots and local_base + slots[-1].rank > MAX_PORT:
        raise PortError(
            f"local ports {local_base}-{local_base + slots[-1].rank} do not fit below {MAX_PORT + 1}",
            hint="choose a lower --local-base-port")

    def usable(port: int) -> bool:
        return 0 < port <= MAX_PORT and port not in used and port not in reserved_set and is_free(port)

    pending: list[RankSlot] = []
    for slot in slots:
        preferred = local_base + slot.rank
        if strict:
            if preferred in reserved_set or preferred in used or not is_free(preferred):
                raise PortError(f"local port {preferred} for rank {slot.rank} is busy",
                                hint="free it or choose another --local-base-port")
            port = preferred
        else:
            port = remembered.get(slot.rank)
            if port is None or not usable(port):
                port = preferred if usable(preferred) else None
        if port is None:
            pending.append(slot)
            continue
        used.add(port)
        out.append(PlannedRank(**vars(slot), local_port=port))
    # Ranks whose preferred port was busy get the next free ports above the plan, in rank order.
    cursor = local_base + (slots[-1].rank if slots else 0) + 1
    for slot in pending:
        while cursor <= MAX_PORT and not usable(cursor):
            cursor += 1
        if cursor > MAX_PORT:
            raise PortError(f"no free local port left for rank {slot.rank}",
                            hint="choose a lower --local-base-port or fewer ranks")
        used.add(cursor)
        out.append(PlannedRank(**vars(slot), local_port=cursor))
    return sorted(out, key=lambda p: p.rank)


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


class PortMemory:
    """rank -> local port remembered in `<workspace>/.dbgfwd/ports.json` (0600, atomic)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict[int, int]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
            return {int(k): int(v) for k, v in data.get("ports", {}).items()}
        except (ValueError, AttributeError, TypeError) as exc:
            raise BadFileError(self.path, f"not a dbgfwd port map ({exc})",
                               hint="delete it; ports will be chosen afresh") from None

    def save(self, planned: Iterable[PlannedRank]) -> None:
        ports = self.load()
        for p in planned:
            ports[p.rank] = p.local_port
        data = {"version": 1, "ports": {str(k): v for k, v in sorted(ports.items())}}
        if self.path.parent.name == ".dbgfwd":
            from dbgfwd.state import ensure_state_dir

            ensure_state_dir(self.path.parent.parent)
        atomic_write_text(self.path, json.dumps(data, indent=2) + "\n", mode=0o600)


def with_remote_port(p: PlannedRank, remote_port: int) -> PlannedRank:
    return replace(p, remote_port=remote_port)
