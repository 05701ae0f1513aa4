"""The `local` provider: ranks running on this machine.

Ranks are found from the launcher's readiness markers, and also from debugpy listeners started
without the launcher (a process whose command line mentions debugpy listening on 127.0.0.1 within
the base port range). Streams are plain TCP connections to 127.0.0.1:port, made only on behalf of
a client that connected to the local forward.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
from typing import ClassVar
from pathlib import Path

from dbgfwd.errors import UpstreamError
from dbgfwd.plan.layout import marker_ranks, of_job
from dbgfwd.providers.base import Capability, Discovery, Provider, RankInfo, Stream, Target
from dbgfwd.providers.local.options import OPTIONS, TITLE
from dbgfwd.rank import markers

PORT_SPAN = 64  # how far above the base port plain debugpy listeners are looked for


class LocalProvider(Provider):
    name = "local"
    title = TITLE
    summary = "ranks on this machine (markers written by dbgfwd-rank, or plain debugpy listeners)"
    capabilities = frozenset({Capability.OUT_OF_BAND_READINESS, Capability.SHARES_LOCAL_PORTS,
                              Capability.REDISCOVERY,
                              Capability.EXEC})
    options = OPTIONS
    keepalive_interval = 3600.0
    # A rank whose process ends is dropped by rediscovery (its marker's pid, watched through a pidfd, every few
    # seconds); the probe is left to tell a debug port that closed in a live process, which is rare. At 1024
    # ranks each probe (every listener of the machine, every rank's readiness folded) is ~20 ms of a core.
    settled_probe_max: ClassVar[float] = 30.0

    @classmethod
    def claims(cls, config) -> bool:
        return False  # the fallback when nothing names another provider

    def _dir(self) -> Path:
        return self.config.opt("runtime_dir") or markers.runtime_dir()

    def _probe(self, sockets: bool = True) -> tuple[markers.ProbeResult, list[int]]:
        """The probe, keeping only the markers of this job: ranks whose port is base + local rank for the
        --base-port asked (another project's ranks in the same marker folder are not ours to forward).
        Also the base ports of the other jobs seen there, for the message when none is ours."""
        probe = markers.local_probe(self._dir(), sockets=sockets)
        base = self.config.base_port
        mine = tuple(of_job(probe.markers, base))
        others = sorted({m.port - m.local_rank for m in probe.markers} - {base})
        return dataclasses.replace(probe, markers=mine), others

    def discover(self) -> Discovery:
        directory = self._dir()
        # The job's markers are the ranks; the socket table is read only for the fallback (plain debugpy
        # listeners, when there are no markers of this job). Rediscovery runs every few seconds.
        probe, other_bases = self._probe(sockets=False)
        if not probe.markers:
            probe, other_bases = self._probe()
        ranks = {r.rank: r for r in marker_ranks(probe.markers)}
        cwd = next((m.cwd for m in probe.markers if m.cwd), None)
        claimed = {m.port for m in probe.markers}
        # Plain debugpy listeners are the fallback for ranks started without the launcher; when the
        # job's markers exist, another session's debugpy in the port range is not one of its ranks.
        plain = [] if probe.markers else _plain_debugpy_ports(probe, self.config.base_port, claimed)
        for port in plain:
            local_rank = port - self.config.base_port
            if local_rank not in {r.local_rank for r in ranks.values()}:
                ranks.setdefault(local_rank, RankInfo(local_rank, local_rank, port))
        where = (f"for rank markers in {directory} and debugpy listeners on 127.0.0.1:"
                 f"{self.config.base_port}-{self.config.base_port + PORT_SPAN - 1}")
        if other_bases:
            where += (f" (ranks of other jobs are there, with base port {', '.join(map(str, other_bases))}: "
                      "pass --base-port to attach to one of them)")
        if not ranks:
            return Discovery(targets=(), where=where)
        target = Target(key="localhost", name="localhost", ranks=tuple(sorted(ranks.values(), key=lambda r: r.rank)),
                        remote_root=cwd, detail={"markers": str(directory)})
        return Discovery(targets=(target,), where=where)

    def exec_targets(self) -> Discovery:
        return Discovery((Target(key="localhost", name="localhost", detail={"markers": str(self._dir())}),),
                         "on this machine")

    def probe(self, target: Target) -> markers.ProbeResult:
        return self._probe()[0]

    def open_stream(self, target: Target, port: int, timeout: float) -> Stream:
        try:
            # The one connect to a rank port: on behalf of a client that connected to our listener.
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except ConnectionRefusedError:
            raise UpstreamError(f"nothing listens on 127.0.0.1:{port} (rank not started or restarting)")
        except OSError as exc:
            raise UpstreamError(f"cannot reach 127.0.0.1:{port}: {exc.strerror or exc}")
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def run(self, target: Target, command: str, timeout: float, stdin: bytes | None = None) -> str:
        try:
            done = subprocess.run(["sh", "-c", command], capture_output=True, timeout=timeout,
                                  **({"input": stdin} if stdin else {"stdin": subprocess.DEVNULL}))
        except subprocess.TimeoutExpired:
            raise UpstreamError(f"command on this machine did not finish in {timeout:g}s") from None
        return done.stdout.decode("utf-8", "replace")


def _plain_debugpy_ports(probe: markers.ProbeResult, base_port: int, claimed: set[int]) -> list[int]:
    """Loopback listeners in the base range owned by a process whose command line mentions debugpy."""
    wanted = {p for ip, p in probe.listening
              if base_port <= p < base_port + PORT_SPAN and p not in claimed and ip in ("127.0.0.1", "::1")}
    if not wanted:
        return []
    from dbgfwd.rank.inject import listeners_by_port, socket_inodes

    by_inode = {inode: port for port, inodes in listeners_by_port().items() if port in wanted for inode in inodes}
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"debugpy" in cmdline:
            found |= {by_inode[i] for i in socket_inodes(int(pid)) if i in by_inode}
    return sorted(found)
