"""The rank layout rule, in one place.

A rank's debugpy listens on `base port + local rank` where it runs; without better knowledge, ranks
are laid out node-major: `rank = node index * ranks per node + local rank` (or from a target's own rank
base, e.g. a workload's replica index). What a rank's marker says beats the rule. Local ports come from
dbgfwd.plan.ports.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Sequence

from dbgfwd.errors import PortError, UsageError
from dbgfwd.providers.base import RankInfo, Target

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


@dataclass(frozen=True)
class PlanSettings:
    base_port: int = DEFAULT_BASE_PORT
    local_base_port: int = DEFAULT_BASE_PORT
    strict_local_ports: bool = False  # the user chose --local-base-port: its ports must be free
    ranks_per_node: int | None = None
    only: frozenset[int] | None = None
    expected_ranks: int | None = None  # plan this many ranks before they show up


def node_ranks(first_rank: int, count: int, base_port: int) -> tuple[RankInfo, ...]:
    """The ranks of one node by the rule: first_rank + i listens on base_port + i."""
    return tuple(RankInfo(rank=first_rank + i, local_rank=i, port=base_port + i) for i in range(count))


def of_job(markers: Iterable, base_port: int | None) -> list:
    """The markers of the job on `base_port`: ranks whose port is base + local rank. Another job of the same user
    on the same host (started on another base port) is not this one, even where its rank numbers are the same."""
    return [m for m in markers if base_port is None or m.port - m.local_rank == base_port]


def marker_ranks(markers: Iterable, base_port: int | None = None) -> tuple[RankInfo, ...]:
    """The ranks rank markers describe (what each rank said of itself), of the job on `base_port` when given."""
    return tuple(RankInfo(rank=m.rank, local_rank=m.local_rank, port=m.port) for m in of_job(markers, base_port))


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
    for node_index in range((world_size + rpn - 1) // rpn):
        node = node_names[node_index] if node_names and node_index < len(node_names) else f"node{node_index}"
        for info in node_ranks(node_index * rpn, min(rpn, world_size - node_index * rpn), base_port):
            slots.append(RankSlot(rank=info.rank, node=node, node_index=node_index, local_rank=info.local_rank,
                                  remote_port=info.port, target_key=node))
    return slots


def slots_for(targets: Sequence[Target], base_port: int, ranks_per_node: int | None,
              expected: int | None = None) -> list[tuple[RankSlot, Target]]:
    """Rank slots implied by what is known about each target.

    Known ranks (markers) win; else `ranks_per_node` ranks per target starting at the target's
    rank base (workload index) or node_index * ranks_per_node.
    """
    ordered = sorted(targets, key=lambda t: (t.node_index, t.name))
    rpn = ranks_per_node
    if rpn is None and expected and ordered and expected % len(ordered) == 0 and not any(t.ranks for t in ordered):
        rpn = expected // len(ordered)
    out: dict[int, tuple[RankSlot, Target]] = {}
    for t in ordered:
        infos: Sequence[RankInfo] = t.ranks
        if not infos and rpn:
            infos = node_ranks(t.rank_base if t.rank_base is not None else t.node_index * rpn, rpn, base_port)
        for info in infos:
            slot = RankSlot(rank=info.rank, node=t.name, node_index=t.node_index, local_rank=info.local_rank,
                            remote_port=info.port, target_key=t.key)
            out.setdefault(info.rank, (slot, t))
    return [out[r] for r in sorted(out)]


def expected_slots(plan: PlanSettings) -> list[RankSlot]:
    """`--ranks N` before anything was found: N ranks by the rule, on nodes not known yet."""
    if not plan.expected_ranks:
        return []
    return [replace(s, target_key="") for s in layout(plan.expected_ranks, plan.ranks_per_node, plan.base_port)]


def with_marker_ranks(target: Target, probe, base_port: int | None = None) -> Target:
    """`target` with the ranks a probe's markers show (of the job on `base_port`), when the provider did not
    already know them."""
    if probe is None or target.ranks or not getattr(probe, "markers", ()):
        return target
    return replace(target, ranks=marker_ranks(probe.markers, base_port))
