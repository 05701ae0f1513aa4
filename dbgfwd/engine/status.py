"""What the engine says about each rank: its state, and immutable snapshots for tables, session.json and
launch.json."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dbgfwd.plan.layout import PlannedRank


class RankState(str, enum.Enum):
    PLANNED = "planned"  # has a local port, listener not up yet
    WAITING = "waiting"  # listener up, rank not there (not started, not listening, pod pending)
    READY = "ready"  # rank is listening (seen out of band)
    CONNECTED = "connected"  # one or more clients are relayed to the rank
    RECONNECTING = "reconnecting"  # a client waits while upstream attempts fail and are retried
    FAILED = "failed"  # a failure retrying cannot fix (forbidden, expired credentials)


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
    program: str | None = None  # what the rank runs, as its marker says (script path or module name)
    generation: int = 0  # how many processes have been seen behind this rank (bumped on a restart)
    held: int = 0  # clients connected and waiting for the rank (it is down or not reachable yet)

    def as_dict(self) -> dict:
        d = self.planned.as_dict()
        d.update(state=self.state.value, reason=self.reason, clients=self.clients,
                 connections=self.connections, failures=self.failures, bytes_up=self.bytes_up,
                 bytes_down=self.bytes_down, target_name=self.target_name, target_status=self.target_status,
                 remote_root=self.remote_root, program=self.program, generation=self.generation,
                 held=self.held)
        return d
