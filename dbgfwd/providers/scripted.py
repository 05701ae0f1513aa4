"""A provider driven by code: targets, readiness and stream failures are whatever its owner sets.

Shipped in the package (as httpx ships its MockTransport) so tests, benchmarks and anyone embedding
the engine fake a provider the same way. Streams are real TCP connections to 127.0.0.1:port. It is
not in the registry: the CLI never offers it.
"""

from __future__ import annotations

import socket
from typing import Callable, Sequence

from dbgfwd.errors import UpstreamError
from dbgfwd.providers.base import Capability, Discovery, Provider, ProviderConfig, Target
from dbgfwd.rank.markers import ProbeResult


class ScriptedProvider(Provider):
    name = "scripted"
    title = "Scripted (code-driven)"
    capabilities = frozenset({Capability.OUT_OF_BAND_READINESS, Capability.REDISCOVERY})

    def __init__(self, targets: Sequence[Target],
                 fail: Callable[[int], UpstreamError | None] | None = None):
        super().__init__(ProviderConfig())
        self.targets = list(targets)  # what discover() returns; replace it to simulate changes
        self.fail = fail  # called with the attempt number; an error it returns is raised by open_stream
        self.attempts = 0
        self.ready_ports: set[int] = set()  # what probe() reports as listening

    @classmethod
    def claims(cls, config) -> bool:
        return False

    def discover(self) -> Discovery:
        return Discovery(tuple(self.targets), where="in the script")

    def probe(self, target: Target) -> ProbeResult:
        return ProbeResult(listening=frozenset(("127.0.0.1", p) for p in self.ready_ports), tcp_known=True)

    def open_stream(self, target: Target, port: int, timeout: float):
        self.attempts += 1
        if self.fail:
            err = self.fail(self.attempts)
            if err:
                raise err
        return socket.create_connection(("127.0.0.1", port), timeout=timeout)
