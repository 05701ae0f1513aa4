"""Local ports: which local port serves which rank, deterministically and stably.

Local port of a rank = the port remembered for it in this workspace (dbgfwd.workspace.ports) if that is
still usable, else local base + global rank if free, else the next free port above the plan.
Remembering means launch.json written yesterday still points at the right ports today.
"""

from __future__ import annotations

import errno
import socket
from typing import Callable, Iterable, Mapping

from dbgfwd.errors import PortError
from dbgfwd.plan.layout import MAX_PORT, PlannedRank, RankSlot

# Where the ranks run on this very machine (the local provider), their own ports sit in our port space:
# local ports then start this far above the base port, so the two never collide.
SHARED_PORT_OFFSET = 1000


def default_local_base(base_port: int, shares_local_ports: bool) -> int:
    """The local port of rank 0 when the user did not choose one."""
    return base_port + SHARED_PORT_OFFSET if shares_local_ports else base_port


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
