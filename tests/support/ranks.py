"""Start real debugpy ranks under `dbgfwd-rank` for tests, and wait for their markers (never the port)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from dbgfwd.rank import markers

# A rank program whose breakpoint line has a rank-dependent local. Line numbers matter: BREAK_LINE.
RANK_PROGRAM = '''\
import os, time
rank = int(os.environ.get("RANK", "0"))
counter = 0
while True:
    counter += 1
    value = rank * 100 + 7
    time.sleep(0.05)
'''
BREAK_LINE = 6  # `value = rank * 100 + 7`: evaluate `value` or `rank` there


def write_program(directory: Path, text: str = RANK_PROGRAM, name: str = "rank_prog.py") -> Path:
    path = Path(directory) / name
    path.write_text(text)
    return path


@dataclass
class RankProcess:
    rank: int
    local_rank: int
    port: int
    proc: subprocess.Popen
    runtime_dir: Path
    log: Path = field(default=None)  # type: ignore[assignment]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)


def start_rank(program: Path, rank: int, local_rank: int, runtime_dir: Path, base_port: int = 5678,
               world_size: int | None = None, extra_env: dict | None = None,
               cmd_prefix: list[str] | None = None, extra_args: list[str] | None = None) -> RankProcess:
    """Start one rank; `cmd_prefix` (e.g. nsenter ...) runs it on another test host."""
    env = dict(os.environ)
    env.update({"RANK": str(rank), "LOCAL_RANK": str(local_rank),
                "WORLD_SIZE": str(world_size or rank + 1),
                "DBGFWD_RUNTIME_DIR": str(runtime_dir), "PYTHONUNBUFFERED": "1"})
    env.update(extra_env or {})
    log = Path(runtime_dir).parent / f"rank{rank}-{time.monotonic_ns()}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = (cmd_prefix or []) + [sys.executable, "-m", "dbgfwd.rank", "--base-port", str(base_port),
                                *(extra_args or []), "--", str(program)]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    return RankProcess(rank, local_rank, base_port + local_rank, proc, Path(runtime_dir), log)


@contextmanager
def local_ranks(directory: Path, base_port: int, count: int, program: Path) -> Iterator[dict]:
    """`count` ranks of `program` on this machine, one node, ranks = local ranks; stopped on exit."""
    runtime = Path(directory) / "run"
    procs = [start_rank(program, r, r, runtime, base_port=base_port, world_size=count) for r in range(count)]
    try:
        wait_for_markers(runtime, set(range(count)), procs=procs)
        yield {"runtime": runtime, "program": program, "base": base_port, "procs": procs}
    finally:
        for p in procs:
            p.stop()


def wait_for_markers(runtime_dir: Path, ranks: set[int], timeout: float = 60.0,
                     procs: list[RankProcess] | None = None) -> list[markers.Marker]:
    """Wait until a live marker exists for each rank (out of band: reads files, never the port)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {m.rank: m for m in markers.read_markers(Path(runtime_dir))}
        if ranks <= set(found):
            return [found[r] for r in sorted(ranks)]
        for p in procs or ():
            if p.proc.poll() is not None:
                raise AssertionError(f"rank {p.rank} exited with {p.proc.returncode}: {p.log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"ranks {sorted(ranks - set(found))} never wrote markers in {runtime_dir}")
        time.sleep(0.05)


# Source of `_nodelay()`: TCP_NODELAY of every connected TCP socket in the process, found by walking the
# heap rather than through pydevd, so a check does not share the product's way of finding debugpy's link
# to its adapter (the only connected socket of a rank that has not opened any of its own).
NODELAY_PROBE = """
def _nodelay():
    import gc, socket
    out = []
    for s in gc.get_objects():
        if isinstance(s, socket.socket) and s.fileno() >= 0 and s.type == socket.SOCK_STREAM:
            try:
                s.getpeername()
            except OSError:
                continue
            out.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    return out
"""


# The same loop in a rank that calls plain `debugpy.listen()` (no dbgfwd-rank: Nagle on, ~44 ms requests),
# with a marker so providers find it. For the benchmark's with/without comparison.
PLAIN_PROGRAM = '''\
import os, sys, time
import debugpy
port = int(os.environ["DBGFWD_PLAIN_PORT"]); rank = int(os.environ["RANK"])
debugpy.listen(("127.0.0.1", port))
from dbgfwd.rank import markers
markers.write_marker(markers.new_marker(rank, rank, port, "127.0.0.1", None, "default", sys.argv))
counter = 0
while True:
    counter += 1
    value = rank * 100 + 7
    time.sleep(0.05)
'''
PLAIN_BREAK_LINE = 10


def start_plain_rank(directory: Path, rank: int, port: int, runtime_dir: Path | str,
                     cmd_prefix: list[str] | None = None, extra_env: dict | None = None) -> RankProcess:
    program = write_program(directory, PLAIN_PROGRAM, name="plain_rank.py")
    env = dict(os.environ, RANK=str(rank), DBGFWD_PLAIN_PORT=str(port), DBGFWD_RUNTIME_DIR=str(runtime_dir),
               PYTHONDONTWRITEBYTECODE="1", **(extra_env or {}))
    log = Path(directory) / f"plain{rank}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen((cmd_prefix or []) + [sys.executable, str(program)], env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return RankProcess(rank, rank, port, proc, Path(runtime_dir), log)
