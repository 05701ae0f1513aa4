"""`dbgfwd stacks` wall time for N ranks on this machine (the local provider), median of a few calls.

The ranks are cheap: Python processes with dbgfwd-rank's stack handler and a marker, and no debugpy (64
debugpy ranks would measure debugpy's start-up, not `stacks`). Run alone: `python -m bench.bench_stacks 4 64`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.paths import ROOT

CHEAP_RANK = '''\
import os, sys, time
sys.path.insert(0, os.environ["DBGFWD_ROOT"])
from dbgfwd.rank import markers, stackdump
rank = int(os.environ["RANK"])
handler = stackdump.install(markers.ensure_runtime_dir(markers.runtime_dir()))
markers.write_marker(markers.new_marker(rank, rank, 40000 + rank, "127.0.0.1", None, "default", sys.argv,
                                        stack=handler))
def step():
    time.sleep(0.05)
while True:
    step()
'''


def stacks_time(workdir: Path, count: int, runs: int = 3) -> dict:
    runtime = workdir / f"stacks-{count}"
    program = workdir / "cheap_rank.py"
    program.write_text(CHEAP_RANK)
    env = dict(os.environ, DBGFWD_RUNTIME_DIR=str(runtime), DBGFWD_ROOT=str(ROOT))
    procs = [subprocess.Popen([sys.executable, str(program)], env=dict(env, RANK=str(r))) for r in range(count)]
    try:
        deadline = time.monotonic() + 120
        while len(list(runtime.glob("rank-*.json"))) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} cheap ranks did not start")
            time.sleep(0.05)
        samples, answered = [], 0
        for _ in range(runs):
            t = time.monotonic()
            res = subprocess.run([sys.executable, "-m", "dbgfwd", "stacks", "--provider", "local", "--runtime-dir",
                                  str(runtime), "--base-port", "40000", "--json"], capture_output=True, text=True,
                                 env=dict(env, PYTHONPATH=str(ROOT)), timeout=120)
            samples.append(time.monotonic() - t)
            answered = sum(1 for r in json.loads(res.stdout)["ranks"] if not r["error"])
        return {"ranks": count, "median_s": statistics.median(samples), "samples_s": samples,
                "answered": answered}
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(10)


def main(argv: list[str]) -> None:
    counts = [int(a) for a in argv] or [4, 64]
    with tempfile.TemporaryDirectory(prefix="dbgfwd-bench-stacks-") as tmp:
        for n in counts:
            r = stacks_time(Path(tmp), n)
            print(f"dbgfwd stacks, {n} ranks: median {r['median_s']:.2f} s ({r['answered']}/{n} answered)")


if __name__ == "__main__":
    main(sys.argv[1:])
