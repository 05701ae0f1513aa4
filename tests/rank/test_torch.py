"""Real distributed PyTorch (CPU build, gloo) under dbgfwd-rank: torchrun, torch.distributed.run, mpirun.

Each job's ranks are found and forwarded by a real `dbgfwd attach --provider local`, and a real DAP
client attaches through the ports launch.json names. The hold tests pause one rank at a breakpoint for
20 s, past the program's own 8 s collective timeout: with dbgfwd-rank's guard the job lives on, without
it (--collective-timeout keep) the job dies, so the guard is what keeps it alive.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dbgfwd.rank import markers
from tests.support import cli
from tests.support.torchjob import (PG_TIMEOUT, Job, hold_past_the_timeout, mpirun_or_skip, release, start_job,
                                    stop_at_break, torch_or_skip, torchrun)

HOLD = 20  # seconds at a breakpoint, well past PG_TIMEOUT
EXPRESSION = "f'{rank}:{reduced}'"


@pytest.fixture(autouse=True)
def _needs_torch():
    torch_or_skip()


def _attach(job: Job, tmp_path: Path, local_base: int) -> tuple[cli.Background, dict[int, int]]:
    ws = tmp_path / "ws"
    ws.mkdir()
    bg = cli.Background("attach", "--provider", "local", "--runtime-dir", str(job.runtime),
                        "--base-port", str(job.base_port), "--local-base-port", str(local_base),
                        "--workspace", str(ws), log=tmp_path / "attach.log")
    cli.wait_ready(ws, bg=bg)
    return bg, cli.launch_ports(ws / ".vscode" / "launch.json")


def test_torchrun_job_attached_through_launch_json_survives_a_long_hold(tmp_path, port_block):
    base, master, local_base = port_block(4), port_block(1, start=40000), port_block(4, start=30000)
    torchrun_bin = str(Path(sys.executable).parent / "torchrun")
    job = start_job(tmp_path / "job", [torchrun_bin, "--nproc-per-node", "4", "--master-addr", "127.0.0.1",
                                       "--master-port", str(master)], 4, base)
    bg = None
    try:
        assert {m.source for m in markers.read_markers(job.runtime)} == {"torchrun"}
        bg, ports = _attach(job, tmp_path, local_base)
        assert ports == {r: local_base + r for r in range(4)}

        # Every rank, through its forward: stopped after the all_reduce, its own rank and the reduced sum.
        for rank, port in ports.items():
            client, thread_id, frame_id = stop_at_break(port, job.program)
            assert client.evaluate(EXPRESSION, frame_id) == repr(f"{rank}:10.0")
            release(client, thread_id, job.program)

        # Hold rank 2 at the breakpoint well past the program's own collective timeout.
        hold_past_the_timeout(job, ports[2], HOLD, EXPRESSION, repr("2:10.0"))
        out = job.output()
        assert out.count("collective timeouts raised to 2h (from 0:00:08)") == 1, out[-3000:]
        assert "Timed out" not in out
    finally:
        if bg is not None:
            assert bg.stop() == 130, bg.output()
        job.stop()


def test_without_the_guard_the_same_hold_kills_the_job(tmp_path, port_block):
    """The contrast, launched with `python -m torch.distributed.run`: --collective-timeout keep, and the
    others' all_reduce times out while rank 1 is held, so the launcher tears the job down."""
    base, master = port_block(2), port_block(1, start=40000)
    job = start_job(tmp_path / "job", torchrun(2, master), 2, base, rank_args=["--collective-timeout", "keep"])
    try:
        client, thread_id, frame_id = stop_at_break(base + 1, job.program)  # straight to rank 1's debugpy
        assert client.evaluate(EXPRESSION, frame_id) == repr("1:3.0")
        try:
            job.proc.wait(PG_TIMEOUT + HOLD + 30)
        finally:
            client.close()
        assert job.proc.returncode != 0
        out = job.output()
        assert "Timed out" in out or "timed out" in out, out[-3000:]
        assert "collective timeouts raised" not in out
    finally:
        job.stop()


def test_mpirun_ranks_are_read_from_open_mpi_and_debugged_through_forwards(tmp_path, port_block):
    mpirun = mpirun_or_skip()
    base, master, local_base = port_block(2), port_block(1, start=40000), port_block(2, start=30000)
    launcher = [mpirun, "--allow-run-as-root", "--oversubscribe", "-np", "2", "-x", "MASTER_ADDR=127.0.0.1",
                "-x", f"MASTER_PORT={master}", "-x", "DBGFWD_RUNTIME_DIR", "-x", "DBGFWD_TEST_PROGRESS",
                "-x", "DBGFWD_TEST_PG_TIMEOUT", "-x", "PYTHONPATH", sys.executable]
    job = start_job(tmp_path / "job", launcher, 2, base,
                    env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    bg = None
    try:
        found = markers.read_markers(job.runtime)
        assert [(m.rank, m.local_rank, m.world_size, m.source) for m in found] == \
            [(0, 0, 2, "openmpi"), (1, 1, 2, "openmpi")]
        bg, ports = _attach(job, tmp_path, local_base)
        for rank, port in ports.items():
            client, thread_id, frame_id = stop_at_break(port, job.program)
            assert client.evaluate(EXPRESSION, frame_id) == repr(f"{rank}:3.0")
            release(client, thread_id, job.program)
        job.wait_steps(0, job.steps(0) + 10)
    finally:
        if bg is not None:
            assert bg.stop() == 130, bg.output()
        job.stop()
