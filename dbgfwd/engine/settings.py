"""The engine's timings, in one frozen place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineSettings:
    bind_host: str = "127.0.0.1"
    connect_timeout: float = 10.0  # one open_stream attempt
    client_wait: float = 60.0  # how long an accepted client waits for its rank before being closed
    backoff_initial: float = 0.1
    backoff_max: float = 3.0
    poll_interval: float = 1.0  # readiness probe of targets with ranks not ready
    # Probe interval of targets while a client waits for its rank: the probe seeing the rank back is
    # what wakes the waiting client (instead of it sleeping out a backoff of up to backoff_max).
    hot_poll_interval: float = 0.2
    settled_poll_interval: float = 5.0  # probe of targets whose ranks are all ready
    rediscover_interval: float = 2.0
    # While discovery keeps returning the same targets and every rank is ready, the interval doubles
    # up to this (256 ranks re-read every 2 s cost ~1% of a core); any change resets it.
    rediscover_max: float = 10.0
    probe_workers: int = 16
    # Other local users are adversaries: connections from any uid but ours (and these) are closed at once.
    allowed_uids: frozenset[int] = frozenset()
    # A flood of connections must not take every thread and descriptor (and the user's own debugger).
    max_clients_per_rank: int = 16
    max_clients: int = 512
    probe_timeout: float = 30.0  # providers bound their own probes; this bounds a provider that does not
