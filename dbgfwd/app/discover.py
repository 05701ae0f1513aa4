"""`ls` as a use case: what attach would find and forward, without forwarding anything."""

from __future__ import annotations

from dataclasses import dataclass, field

from dbgfwd import providers
from dbgfwd.app.options import AttachOptions, provider_config
from dbgfwd.plan.layout import RankSlot, slots_for, with_marker_ranks
from dbgfwd.providers.base import Provider, Target
from dbgfwd.ui.console import Console


@dataclass(frozen=True)
class Listing:
    provider: str
    where: str
    targets: list[Target]  # with the ranks their markers show
    slots: list[tuple[RankSlot, Target]]
    probes: dict = field(default_factory=dict)  # target key -> ProbeResult (or None), where probed

    def ranks_of(self, target: Target) -> list[int]:
        return [s.rank for s, t in self.slots if t.key == target.key]


def open_provider(opts: AttachOptions) -> Provider:
    config = provider_config(opts)
    return providers.choose(opts.provider, config)(config)


def find(provider: Provider, opts: AttachOptions, console: Console, probe_all: bool = False) -> Listing:
    """Discover and read markers out of band (of targets whose ranks the provider does not know, or all)."""
    with console.status(f"discovering ({provider.name})..."):
        discovery = provider.discover()
        probes = {t.key: provider.probe(t) for t in discovery.targets
                  if t.running and (probe_all or not t.ranks)}
    probed = [with_marker_ranks(t, probes.get(t.key), opts.base_port) for t in discovery.targets]
    return Listing(provider.name, discovery.where, probed,
                   slots_for(probed, opts.base_port, opts.ranks_per_node, opts.expected_ranks), probes)


def discover(opts: AttachOptions, console: Console) -> Listing:
    provider = open_provider(opts)
    try:
        return find(provider, opts, console)
    finally:
        provider.close()
