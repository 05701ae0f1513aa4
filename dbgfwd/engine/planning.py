"""Planning: turn what discovery and probes found into ranks with a bound local listener each.

Runs on the monitor thread (and in Engine.start before it exists), never concurrently with itself.
Port assignment, the port memory's file I/O and binding happen outside the table's lock; only the
finished entries are put in the table under it.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import replace
from typing import Callable, Sequence

from dbgfwd.engine.status import RankStatus
from dbgfwd.engine.table import RankEntry, RankTable
from dbgfwd.errors import DbgfwdError, PortError
from dbgfwd.net.listeners import Acceptor, bind_listener
from dbgfwd.plan.layout import PlanSettings, RankSlot, expected_slots, slots_for, with_marker_ranks
from dbgfwd.plan.ports import assign_local_ports
from dbgfwd.platform import open_files_limit
from dbgfwd.providers.base import Capability, Provider, Target
from dbgfwd.workspace.ports import PortMemory

log = logging.getLogger("dbgfwd.engine")
LISTEN_SPARE = 64  # open files beside the listeners: the job session, probes, state files


class Planning:
    def __init__(self, table: RankTable, provider: Provider, plan: PlanSettings, bind_host: str,
                 memory: PortMemory | None, acceptor: Acceptor,
                 on_plan_change: Callable[[list[RankStatus]], None] | None = None):
        self.table = table
        self.provider = provider
        self.plan = plan
        self.bind_host = bind_host
        self.memory = memory
        self.acceptor = acceptor
        self._on_plan_change = on_plan_change
        self._applied: tuple | None = None  # inputs of the last apply_targets (skip identical passes)

    def _reserved_ports(self) -> set[int]:
        if not self.provider.has(Capability.SHARES_LOCAL_PORTS):
            return set()
        # The ranks' own debug ports live in our port space: never listen on them.
        span = max(64, self.plan.ranks_per_node or 0)
        return set(range(self.plan.base_port, self.plan.base_port + span)) | {
            r.planned.remote_port for r in self.table.ranks.values()}

    def add_slots(self, slots: Sequence[tuple[RankSlot, Target | None]]) -> list[int]:
        """Plan and bind listeners for slots of ranks not yet planned. Returns the new ranks."""
        with self.table.lock:
            new = [(s, t) for s, t in slots if s.rank not in self.table.ranks
                   and (self.plan.only is None or s.rank in self.plan.only)]
            taken = {r.planned.local_port for r in self.table.ranks.values()}
            reserved = self._reserved_ports()
        if not new:
            return []
        remembered = self.memory.load() if self.memory else {}
        planned = assign_local_ports([s for s, _ in new], self.plan.local_base_port, remembered,
                                     reserved=reserved, strict=self.plan.strict_local_ports, taken=taken)
        by_rank = {slot.rank: t for slot, t in new}
        total = len(taken) + len(planned)
        limit, wanted = open_files_limit(total)
        if limit is not None and limit < wanted:
            if limit < total + LISTEN_SPARE:  # not even a listener each
                raise PortError(f"{total} ranks need more open files than this process may open ({limit})",
                                hint=f"raise the limit (`ulimit -n {wanted}`) or forward fewer ranks with --only")
            log.warning("%d ranks may need %d open files once debuggers attach, and this process may open %d: "
                        "raise the limit (`ulimit -n %d`) or forward fewer ranks with --only",
                        total, wanted, limit, wanted)
        entries: list[RankEntry] = []
        for p in planned:
            try:
                listener = bind_listener(self.bind_host, p.local_port)
            except OSError as exc:
                for e in entries:
                    e.listener.close()
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    need = f"; {total} ranks need about {wanted}, the limit is {limit}" if limit else ""
                    raise PortError(f"cannot listen for rank {p.rank}: too many open files{need}",
                                    hint="raise the limit (`ulimit -n`) or forward fewer ranks with --only") from None
                # Lost a race for the port between planning and binding: say which and why.
                raise PortError(f"cannot listen on {self.bind_host}:{p.local_port} for rank {p.rank}: "
                                f"{exc.strerror or exc}", hint="free the port or choose another --local-base-port")
            entries.append(RankEntry(planned=p, target=by_rank.get(p.rank), listener=listener))
        with self.table.lock:
            for e in entries:
                self.table.ranks[e.planned.rank] = e
        for e in entries:
            self.acceptor.add(e.listener, e.planned.rank)
        if self.memory:
            self.memory.save(planned)
        return [p.rank for p in planned]

    def plan_expected(self) -> None:
        """`--ranks N`: listeners for N ranks before any has been found."""
        with self.table.lock:
            if self.table.ranks:
                return
        if self.add_slots([(s, None) for s in expected_slots(self.plan)]):
            self.plan_changed()

    def apply_targets(self, targets: Sequence[Target], initial: bool = False) -> bool:
        """Fold a discovery (and the last probes' markers) into the plan. False: nothing new to apply."""
        table = self.table
        with table.lock:
            inputs = (list(targets), {k: getattr(v, "markers", ()) for k, v in table.probe_results.items()})
            if not initial and inputs == self._applied:
                return False
            self._applied = inputs
            table.targets = {t.key: t for t in targets}
            known = [with_marker_ranks(t, table.probe_results.get(t.key), self.plan.base_port) for t in targets]
        slots = slots_for(known, self.plan.base_port, self.plan.ranks_per_node, self.plan.expected_ranks)
        changed = bool(self.add_slots(slots))
        with table.lock:
            for slot, target in slots:
                rank = table.ranks.get(slot.rank)
                if rank is None:
                    continue
                if rank.target is None or rank.target.key != target.key or rank.target != target:
                    rank.target = target
                    changed = True
                if rank.planned.remote_port != slot.remote_port or rank.planned.node != slot.node:
                    rank.planned = replace(rank.planned, remote_port=slot.remote_port, node=slot.node,
                                           node_index=slot.node_index, local_rank=slot.local_rank,
                                           target_key=slot.target_key)
                    changed = True
        if changed or initial:
            self.plan_changed()
        return True

    def plan_changed(self) -> None:
        if self._on_plan_change:
            try:
                self._on_plan_change(self.table.snapshot())
            except DbgfwdError as exc:
                log.warning("%s", exc.message)
        self.table.state_changed()
