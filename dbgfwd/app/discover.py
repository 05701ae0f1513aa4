"""`ls` as a use case: what attach would find and forward, without forwarding anything."""

from __future__ import annotations

from dataclasses import dataclass

from dbgfwd import providers
from dbgfwd.app.options import AttachOptions, provider_config
from dbgfwd.plan.layout import RankSlot, slots_for, with_marker_ranks
from dbgfwd.providers.base import Target
from dbgfwd.ui.console import Console


@dataclass(frozen=True)
class Listing:
    provider: str
    where: str
    targets: list[Target]  # with the ranks their markers show
    slots: list[tuple[RankSlot, Target]]

    def ranks_of(self, target: Target) -> list[int]:
        return [s.rank for s, t in self.slots if t.key == target.key]


def discover(opts: AttachOptions, console: Console) -> Listing:
    config = provider_config(opts)
    cls = providers.choose(opts.provider, config)
    provider = cls(config)
    try:
        with console.status(f"discovering ({cls.name})..."):
            discovery = provider.discover()
            probed = [with_marker_ranks(t, provider.probe(t) if t.running and not t.ranks else None)
                      for t in discovery.targets]
    finally:
        provider.close()
    return Listing(cls.name, discovery.where, probed,
                   slots_for(probed, opts.base_port, opts.ranks_per_node, opts.expected_ranks))
