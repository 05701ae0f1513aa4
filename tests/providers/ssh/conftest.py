"""Shared SSH test hosts: one lab (network namespaces + real sshd) per test module.

Topology: client --- h1, client --- h2, client --- jump --- hidden --- deep (hidden only via jump,
deep only via jump and hidden).
Each of h1, h2, hidden runs two real debugpy ranks under dbgfwd-rank on 127.0.0.1:5678-5679.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import require
from tests.support.netns import Lab
from tests.support.ranks import RankProcess, start_rank, wait_for_markers, write_program

ROOT = Path(__file__).resolve().parents[3]
RANKS_PER_HOST = 2
BASE_PORT = 5678


def lab_or_skip() -> Lab:
    reason = Lab.supported()
    if reason:
        require.missing(f"SSH integration tests cannot run: {reason}")
    return Lab()


def start_host_ranks(lab: Lab, host, node_index: int, program: Path, count: int = RANKS_PER_HOST,
                     world_size: int | None = None) -> list[RankProcess]:
    """`count` ranks on `host` under dbgfwd-rank, markers in the host's own /tmp/dbgfwd-<uid>."""
    procs = []
    for local in range(count):
        rank = node_index * count + local
        procs.append(start_rank(
            program, rank, local, runtime_dir=lab.directory / host.name / "ranks", base_port=BASE_PORT,
            world_size=world_size, cmd_prefix=host.prefix(),
            extra_env={"DBGFWD_RUNTIME_DIR": f"/tmp/dbgfwd-{os.getuid()}",
                       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}))
    return procs


def wait_host_ranks(host, procs: list[RankProcess], timeout: float = 60.0) -> None:
    """Wait for the ranks' markers in the host's private /tmp (out of band, never the port)."""
    wait_for_markers(host.path(f"/tmp/dbgfwd-{os.getuid()}"), {p.rank for p in procs}, timeout, procs)


@pytest.fixture(scope="module")
def lab():
    lab = lab_or_skip()
    try:
        lab.add_host("h1")
        lab.add_host("h2")
        jump = lab.add_host("jump")
        hidden = lab.add_host("hidden", via=jump)
        lab.add_host("deep", via=hidden)  # two hops: jump, then hidden
        lab.program = write_program(lab.directory)
        lab.ranks = {}
        for index, name in enumerate(("h1", "h2", "hidden")):
            lab.ranks[name] = start_host_ranks(lab, lab.hosts[name], index, lab.program, world_size=6)
        for name, procs in lab.ranks.items():
            wait_host_ranks(lab.hosts[name], procs)
        lab.ssh_config = lab.write_ssh_config()
        yield lab
    finally:
        for procs in getattr(lab, "ranks", {}).values():
            for p in procs:
                p.stop()
        lab.close()
