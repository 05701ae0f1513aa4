"""The rank model: states, immutable status snapshots, and how ranks are laid out over targets."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Sequence

from dbgfwd.planner import PlannedRank, RankSlot
from dbgfwd.providers.base import RankInfo, Target


class RankState(str, enum.Enum):
    PLANNED = "planned"  # has a local port, listener not up yet
    WAITING = "waiting"  # listener up, rank not there (not started, not listening, pod pending)
    READY = "ready"  # rank is listening (seen out of band)
    CONNECTED = "connected"  # one or more clients are relayed to the rank
    RECONNECTING = "reconnecting"  # a client waits while upstream attempts fail and are retried
    FAILED = "failed"  # a failure retrying cannot fix (forbidden, expired credentials)


@dataclass(frozen=True)
class PlanSettings:
    base_port: int = 5678
    local_base_port: int = 5678
    strict_local_ports: bool = False  # the user chose --local-base-port: its ports must be free
    ranks_per_node: int | None = None
    only: frozenset[int] | None = None
    expected_ranks: int | None = None  # plan this many ranks before they show up


@dataclass(frozen=True)
class RankStatus:
    """An immutable snapshot of one rank, for tables, session.json and launch.json."""

    planned: PlannedRank
    target_name: str
    target_status: str
    state: RankState
    reason: str
    clients: int
    connections: int
    failures: int
    bytes_up: int
    bytes_down: int
    remote_root: str | None

    def as_dict(self) -> dict:
        d = self.planned.as_dict()
        d.update(state=self.state.value, reason=self.reason, clients=self.clients,
                 connections=self.connections, failures=self.failures, bytes_up=self.bytes_up,
                 bytes_down=self.bytes_down, target_name=self.target_name, target_status=self.target_status,
                 remote_root=self.remote_root)
        return d


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
        infos: list[RankInfo] = list(t.ranks)
        if not infos and rpn:
            start = t.rank_base if t.rank_base is not None else t.node_index * rpn
            infos = [RankInfo(rank=start + lr, local_rank=lr, port=base_port + lr) for lr in range(rpn)]
        for info in infos:
            slot = RankSlot(rank=info.rank, node=t.name, node_index=t.node_index, local_rank=info.local_rank,
                            remote_port=info.port, target_key=t.key)
            out.setdefault(info.rank, (slot, t))
    return [out[r] for r in sorted(out)]


def with_marker_ranks(target: Target, probe) -> Target:
    """`target` with the ranks a probe's markers show, when the provider did not already know them."""
    if probe is None or target.ranks or not getattr(probe, "markers", ()):
        return target
    return replace(target, ranks=tuple(RankInfo(rank=m.rank, local_rank=m.local_rank, port=m.port)
                                       for m in probe.markers))
