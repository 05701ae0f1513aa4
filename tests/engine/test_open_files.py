"""Many ranks under a desktop's default limit on open files (Linux 1024, macOS 256 per process): the attach
raises its own soft limit towards the hard one, and when even the hard limit is too low it says so in one line
before binding anything."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

from dbgfwd.errors import ExitCode
from tests.support import cli

RANKS = 150  # a listener each: more than a soft limit of 64 allows


def _attach(tmp_path, port_block, soft: int, hard: int) -> subprocess.Popen:
    base = port_block(2 * RANKS + 64)  # the ranks' ports (and the span attach keeps clear), then the local ones
    local = base + RANKS + 64

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    log = open(tmp_path / "attach.log", "wb")
    return subprocess.Popen([*cli.DBGFWD, "attach", "--provider", "local", "--runtime-dir", str(tmp_path / "run"),
                             "--ranks", str(RANKS), "--base-port", str(base), "--local-base-port", str(local),
                             "--workspace", str(tmp_path)], stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=limit, start_new_session=True)


@pytest.mark.skipif(sys.platform == "win32", reason="no open-files limit to raise on Windows")
def test_a_low_soft_limit_is_raised_so_every_rank_gets_its_listener(tmp_path, port_block):
    proc = _attach(tmp_path, port_block, 64, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    try:
        cli.wait_for(lambda: (tmp_path / ".dbgfwd" / "session.json").exists() or proc.poll() is not None,
                     timeout=60, what="the attach's session")
        assert proc.poll() is None, (tmp_path / "attach.log").read_text()
        ranks = json.loads(cli.run("status", "--json", "-w", str(tmp_path)).stdout)["ranks"]
        assert len(ranks) == RANKS and {r["state"] for r in ranks} == {"waiting"}
        assert len(cli.launch_ports(tmp_path / ".vscode" / "launch.json")) == RANKS
        fds = len(os.listdir(f"/proc/{proc.pid}/fd")) if os.path.isdir("/proc") else RANKS
        assert fds > 64  # it really holds more than the limit it was started with
    finally:
        proc.send_signal(2)
        assert proc.wait(20) == 130, (tmp_path / "attach.log").read_text()


@pytest.mark.skipif(sys.platform == "win32", reason="no open-files limit on Windows")
def test_a_hard_limit_too_low_for_the_ranks_is_one_clear_error_and_nothing_written(tmp_path, port_block):
    proc = _attach(tmp_path, port_block, 64, 64)
    assert proc.wait(60) == ExitCode.PORT_UNAVAILABLE
    out = (tmp_path / "attach.log").read_text()
    assert out.count("\n") == 1, out
    assert f"{RANKS} ranks need more open files than this process may open (64)" in out and "ulimit -n" in out
    assert not (tmp_path / ".vscode").exists()
