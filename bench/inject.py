"""How long `dbgfwd attach --inject` takes to make N running ranks debuggable (not a test: figures).

    python -m bench.inject [--ranks 4,64] [--torch]

For each N: N rank processes are started on this machine without dbgfwd-rank (a plain Python loop, or with
--torch a gloo torchrun job, whose interpreters have torch's libraries loaded), then the local injector
runs as `attach --inject` runs it. Printed per N: the wall time from the start of the injection until every
rank is debuggable, the slowest and the median rank, and how each was entered (at a safe point, or in a
main thread blocked in a system call). Nothing connects to a debug port.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOOP = '''\
import os, time
rank = int(os.environ["RANK"])
while True:
    value = rank * 100 + 7
    time.sleep(0.05)
'''


def _free_base(count: int) -> int:
    from dbgfwd.plan.ports import port_is_free

    base = 21000
    while not all(port_is_free(base + i) for i in range(count)):
        base += count + 11
    return base


def _start_loop(directory: Path, n: int) -> list[subprocess.Popen]:
    program = directory / "bench_rank.py"
    program.write_text(LOOP)
    procs = []
    for i in range(n):
        env = dict(os.environ, RANK=str(i), LOCAL_RANK=str(i), WORLD_SIZE=str(n),
                   DBGFWD_RUNTIME_DIR=str(directory / "run"))
        procs.append(subprocess.Popen([sys.executable, str(program)], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
    time.sleep(1.0 + n * 0.03)  # interpreters up and in their loops
    return procs


def _start_torch(directory: Path, n: int) -> list[subprocess.Popen]:
    from tests.support.torchjob import start_job, torchrun

    job = start_job(directory / "job", torchrun(n, _free_base(1) + 500), n, 0, under_dbgfwd=False)
    return [job.proc]


def one(n: int, use_torch: bool) -> dict:
    from dbgfwd.app.inject import LocalStager
    from dbgfwd.app.inject import InjectOptions
    from dbgfwd.app.options import AttachOptions
    from tests.support.procinfo import kill_group

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        procs = _start_torch(directory, n) if use_torch else _start_loop(directory, n)
        try:
            base = _free_base(n)
            opts = AttachOptions(workspace=directory, provider="local", base_port=base)
            began = time.monotonic()
            report = LocalStager().run(opts, InjectOptions(match="bench_rank.py|train.py"))
            wall = time.monotonic() - began
        finally:
            for p in procs:
                kill_group(p, 30)
    ranks = report["ranks"]
    took = sorted(r["took"] for r in ranks if r.get("took") is not None)
    return {"ranks": n, "torch": use_torch, "wall_s": round(wall, 2),
            "injected": sum(r["state"] == "injected" for r in ranks),
            "median_rank_s": round(statistics.median(took), 2) if took else None,
            "slowest_rank_s": took[-1] if took else None,
            "how": sorted({r.get("how") for r in ranks if r.get("how")}),
            "failed": [r["reason"] for r in ranks if r["state"] != "injected"][:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", default="4,64", help="comma-separated rank counts")
    parser.add_argument("--torch", action="store_true", help="a real gloo torchrun job instead of plain loops")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [one(int(n), args.torch) for n in args.ranks.split(",")]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'ranks':>5} {'torch':>5} {'wall s':>7} {'median s':>8} {'slowest s':>9} {'injected':>8}  how")
    for r in rows:
        print(f"{r['ranks']:>5} {str(r['torch']):>5} {r['wall_s']:>7} {r['median_rank_s']!s:>8} "
              f"{r['slowest_rank_s']!s:>9} {r['injected']:>8}  {', '.join(r['how'])} {'; '.join(r['failed'])}")


if __name__ == "__main__":
    main()
