"""Serving: each accepted client gets its own upstream stream to its rank, then a relay.

A client that connects before its rank is there waits (capped, jittered backoff, woken early when
readiness sees the rank) up to `client_wait`, and is dropped as soon as it hangs up.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import Iterable

from dbgfwd import platform
from dbgfwd.engine.settings import EngineSettings
from dbgfwd.engine.table import RankEntry, RankTable
from dbgfwd.errors import UpstreamError
from dbgfwd.net.listeners import client_gone, client_has_spoken, wait_readable
from dbgfwd.net.relay import Relay
from dbgfwd.providers.base import Provider

log = logging.getLogger("dbgfwd.engine")


def backoff_delays(initial: float, maximum: float) -> Iterable[float]:
    """Capped exponential backoff with full jitter (never two clients in lock-step)."""
    delay = initial
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(maximum, delay * 2)


class Server:
    def __init__(self, table: RankTable, provider: Provider, settings: EngineSettings, stop: threading.Event,
                 kick: threading.Event):
        self.table = table
        self.provider = provider
        self.settings = settings
        self._stop = stop
        self._kick = kick
        self._refused: set[str] = set()

    def accepted(self, rank_id: int, client) -> None:
        refused = self._refuse(rank_id, client)
        if refused:
            client.close()
            kind, why = refused
            if kind not in self._refused:  # once per kind of reason: a flood must not flood the log too
                self._refused.add(kind)
                log.warning("rank %s: closed a connection: %s", rank_id, why)
            return
        threading.Thread(target=self._serve_guarded, args=(rank_id, client), name=f"dbgfwd-rank{rank_id}",
                         daemon=True).start()

    def _refuse(self, rank_id: int, client) -> tuple[str, str] | None:
        """(kind, why) this connection must not reach the rank, or None. Counts it as a client when admitted."""
        uid = platform.peer_uid(client)
        if uid is not None and uid != os.getuid() and uid not in self.settings.allowed_uids:
            return f"uid {uid}", f"it came from uid {uid}, not from you (attach --allow-user admits another user)"
        with self.table.lock:
            rank = self.table.ranks.get(rank_id)
            if rank is None:
                return "no rank", "no such rank"
            total = sum(r.clients for r in self.table.ranks.values())
            if rank.clients >= self.settings.max_clients_per_rank or total >= self.settings.max_clients:
                return "cap", (f"too many connections ({rank.clients} to this rank, {total} in all; at most "
                               f"{self.settings.max_clients_per_rank} and {self.settings.max_clients})")
            rank.clients += 1
        return None

    def _serve_guarded(self, rank_id: int, client) -> None:
        try:
            self._serve(rank_id, client)
        except Exception as exc:  # a provider's bug must not leave the client hanging or kill silently
            log.warning("rank %s: serving a client failed: %s", rank_id, exc, exc_info=log.isEnabledFor(10))
            try:
                client.close()
            except OSError:
                pass
        finally:
            with self.table.lock:
                self.table.ranks[rank_id].clients -= 1

    def _serve(self, rank_id: int, client) -> None:
        with self.table.lock:
            rank = self.table.ranks[rank_id]
        upstream = self._open_upstream(rank, client)
        if upstream is None:
            client.close()
            return
        relay = Relay(client, upstream, on_done=lambda rl: self._relay_done(rank, rl), name=f"rank{rank_id}")
        with self.table.lock:
            rank.relays.add(relay)
            rank.connections += 1
            rank.failed = ""
            rank.reason = ""
        self.table.state_changed()
        relay.run()

    def _open_upstream(self, rank: RankEntry, client):
        s = self.settings
        deadline = time.monotonic() + s.client_wait
        delays = backoff_delays(s.backoff_initial, s.backoff_max)
        waiting = False
        try:
            while not self._stop.is_set():
                with self.table.lock:
                    target, port, foreign = rank.target, rank.planned.remote_port, rank.foreign_uid
                if foreign is not None:
                    with self.table.lock:
                        rank.reason = f"port {port} is held by uid {foreign}, not by your rank: not connecting"
                elif client_gone(client):
                    return None  # it hung up (maybe with its request unread): nothing to open upstream for
                elif not client_has_spoken(client):
                    # Connected but silent so far: no upstream until it speaks (a DAP client's first
                    # request follows its connect at once; a port scanner's close never reaches a rank).
                    if time.monotonic() > deadline:
                        return None
                    wait_readable(client, min(0.5, max(0.0, deadline - time.monotonic())))
                    continue
                elif target is not None and target.running:
                    try:
                        return self.provider.open_stream(target, port, s.connect_timeout)
                    except UpstreamError as exc:
                        with self.table.lock:
                            rank.failures += 1
                            rank.reason = exc.message
                            if not exc.retryable:
                                rank.failed = exc.message
                        self.table.state_changed()
                        if not exc.retryable:
                            log.warning("rank %s: %s", rank.planned.rank, exc.message)
                            return None
                    except (OSError, EOFError) as exc:
                        with self.table.lock:
                            rank.failures += 1
                            rank.reason = f"upstream: {exc}"
                else:
                    with self.table.lock:
                        rank.reason = "waiting for the rank to start" if target is None else \
                            f"target {target.name} is {target.status}"
                if not waiting and client_has_spoken(client):
                    waiting = True
                    with self.table.lock:
                        rank.retrying += 1
                    self._kick.set()  # the monitor switches to hot probing of this target
                    self.table.state_changed()
                if time.monotonic() > deadline or client_gone(client):
                    return None
                self.table.sleep_unless_woken(rank, min(next(delays), max(0.0, deadline - time.monotonic())),
                                              self._stop)
            return None
        finally:
            if waiting:
                with self.table.lock:
                    rank.retrying -= 1
                self.table.state_changed()

    def _relay_done(self, rank: RankEntry, relay: Relay) -> None:
        with self.table.lock:
            rank.relays.discard(relay)
            rank.bytes_up += relay.counters.up
            rank.bytes_down += relay.counters.down
        self.table.state_changed()
