"""Real distributed PyTorch jobs (CPU build, gloo) for tests: torchrun, torch.distributed.run, mpirun.

torch is installed by scripts/setup.sh (the CPU build); these tests fail in CI when it is missing, and
skip with the reason elsewhere. Progress is reported out of band (one file per rank), so a test can tell
that the job goes on without ever touching a debug port.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


from tests.support import require
from tests.support.ranks import wait_for_markers

# A gloo all_reduce loop. The breakpoint line comes right after the collective: `reduced` is the sum of
# (rank + 1) over all ranks, so an evaluate there shows both the rank and the reduced value.
TRAIN_PROGRAM = '''\
import os, sys, time
from datetime import timedelta
if "RANK" not in os.environ and "OMPI_COMM_WORLD_RANK" in os.environ:  # mpirun: env:// wants these names
    os.environ["RANK"] = os.environ["OMPI_COMM_WORLD_RANK"]
    os.environ["WORLD_SIZE"] = os.environ["OMPI_COMM_WORLD_SIZE"]
import torch
import torch.distributed as dist
dist.init_process_group("gloo", timeout=timedelta(seconds=float(os.environ["DBGFWD_TEST_PG_TIMEOUT"])))
rank = dist.get_rank()
step = 0
while True:
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    reduced = t.item()
    step += 1
    progress = os.path.join(os.environ["DBGFWD_TEST_PROGRESS"], f"rank{rank}")
    with open(progress + ".tmp", "w") as fh:  # renamed into place: a reader never sees it empty
        fh.write(str(step))
    os.replace(progress + ".tmp", progress)
    time.sleep(0.02)
'''
# A hang as users meet it: at step 10 rank 3 is stuck loading data while the others wait in all_reduce
# (with dbgfwd-rank's guard, they wait). The file `release` in the progress folder lets rank 3 go on.
HANG_PROGRAM = '''\
import os, time
from datetime import timedelta
import torch
import torch.distributed as dist
dist.init_process_group("gloo", timeout=timedelta(seconds=float(os.environ["DBGFWD_TEST_PG_TIMEOUT"])))
rank = dist.get_rank()
release = os.path.join(os.environ["DBGFWD_TEST_PROGRESS"], "release")
def load_batch(step):
    while rank == 3 and step == 10 and not os.path.exists(release):
        time.sleep(0.01)
    return torch.tensor([float(rank + 1)])
step = 0
while True:
    t = load_batch(step)
    dist.all_reduce(t)
    step += 1
    progress = os.path.join(os.environ["DBGFWD_TEST_PROGRESS"], f"rank{rank}")
    with open(progress + ".tmp", "w") as fh:  # renamed into place: a reader never sees it empty
        fh.write(str(step))
    os.replace(progress + ".tmp", progress)
    time.sleep(0.02)
'''
HANG_LOOP_LINE = HANG_PROGRAM.splitlines().index("    while rank == 3 and step == 10 and not os.path.exists(release):") + 1
HANG_REDUCE_LINE = HANG_PROGRAM.splitlines().index("    dist.all_reduce(t)") + 1

# The line after `reduced = t.item()`: stopped there, `reduced` holds the all_reduce result.
BREAK_LINE = TRAIN_PROGRAM.splitlines().index("    step += 1") + 1
PG_TIMEOUT = 8  # the program's own collective timeout, seconds


def torch_or_skip() -> None:
    """Fail in CI, skip elsewhere, when torch is missing. Never imports torch into the test process: the
    jobs run it in their own processes, and torch's threads have no business in pytest's."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        require.missing("torch is not installed; scripts/setup.sh test installs its CPU build")


def mpirun_or_skip() -> str:
    path = shutil.which("mpirun")
    if path is None:
        require.missing("mpirun is not installed (apt-get install openmpi-bin; scripts/test.sh does)")
    return path


@dataclass
class Job:
    proc: subprocess.Popen
    directory: Path
    runtime: Path
    progress: Path
    program: Path
    log: Path
    base_port: int

    def steps(self, rank: int) -> int:
        try:
            return int((self.progress / f"rank{rank}").read_text() or 0)
        except (OSError, ValueError):
            return 0

    def wait_steps(self, rank: int, at_least: int, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.steps(rank) >= at_least:
                return self.steps(rank)
            if self.proc.poll() is not None:
                raise AssertionError(f"job exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"rank {rank} did not reach step {at_least}:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue


def start_job(directory: Path, launcher: list[str], ranks: int, base_port: int, rank_args: list[str] = (),
              env: dict | None = None, program_text: str = TRAIN_PROGRAM, under_dbgfwd: bool = True) -> Job:
    """`launcher` (e.g. torchrun --nproc-per-node 4) running `python -m dbgfwd.rank ... -- train.py`, or, with
    `under_dbgfwd=False`, running plain `train.py` as a job started without dbgfwd is."""
    directory.mkdir(parents=True, exist_ok=True)
    program = directory / "train.py"
    program.write_text(program_text)
    runtime, progress = directory / "run", directory / "progress"
    progress.mkdir(exist_ok=True)
    log = directory / "job.log"
    full_env = dict(os.environ, DBGFWD_RUNTIME_DIR=str(runtime), DBGFWD_TEST_PROGRESS=str(progress),
                    DBGFWD_TEST_PG_TIMEOUT=str(PG_TIMEOUT), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    full_env.update(env or {})
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        full_env.pop(var, None)
    cmd = [*launcher, "-m", "dbgfwd.rank", "--base-port", str(base_port), *rank_args, "--", str(program)] \
        if under_dbgfwd else [*launcher, str(program)]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=full_env, stdout=fh, stderr=subprocess.STDOUT, cwd=directory,
                                start_new_session=True)
    job = Job(proc, directory, runtime, progress, program, log, base_port)
    try:
        if under_dbgfwd:
            wait_for_markers(runtime, set(range(ranks)), timeout=120)
        for rank in range(ranks):
            job.wait_steps(rank, 1, timeout=120)
    except BaseException:
        job.stop()
        raise
    return job


def torchrun(nproc: int, master_port: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-addr", "127.0.0.1", "--master-port", str(master_port)]


def stop_at_break(port: int, program: Path, line: int = BREAK_LINE):
    """A DAP client attached through `port`, stopped at `program:line`: (client, thread id, frame id)."""
    from tests.support.dap import DapClient

    client = DapClient("127.0.0.1", port, timeout=60)
    client.attach({str(program): [line]})
    thread_id = client.wait_stopped(60)["body"]["threadId"]
    return client, thread_id, client.top_frame(thread_id)["id"]


def release(client, thread_id: int, program: Path) -> None:
    """Clear the breakpoint, continue, hang up: the rank runs on."""
    client.request("setBreakpoints", {"source": {"path": str(program)}, "breakpoints": []})
    client.continue_(thread_id)
    client.disconnect()


def hold_past_the_timeout(job: Job, port: int, seconds: float, expression: str, expected: str) -> None:
    """Hold the rank behind `port` at the breakpoint for `seconds` (past the program's collective timeout): the
    job must live on with rank 0 blocked meanwhile, the held frame must still evaluate, and after continue
    every rank must go on."""
    client, thread_id, frame_id = stop_at_break(port, job.program)
    held_at = job.steps(0)
    time.sleep(seconds)
    assert job.proc.poll() is None, job.output()[-3000:]
    assert job.steps(0) <= held_at + 1, "rank 0 went on while the held rank was stopped: not really blocked"
    assert client.evaluate(expression, frame_id) == expected
    release(client, thread_id, job.program)
    for rank in range(4):
        job.wait_steps(rank, held_at + 20)  # the job goes on after continue
    assert job.proc.poll() is None
