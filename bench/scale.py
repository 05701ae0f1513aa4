"""Whole-process measurements: attach-to-all-ready, idle cost of many forwards, CLI start time."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.paths import ROOT, DbgfwdAttach, dbgfwd_env, free_port
from tests.support.echo_server import EchoServer
from tests.support.ranks import RankProcess, start_rank, wait_for_markers, write_program

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children are not counted) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def idle_cost(pids: list[int], seconds: float) -> dict:
    """CPU % of one core and RSS summed over `pids`, sampled across `seconds` of idling."""
    before = sum(cpu_seconds(p) for p in pids)
    t = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t
    after = sum(cpu_seconds(p) for p in pids)
    return {"cpu_pct": 100 * (after - before) / elapsed, "rss_mb": sum(rss_mb(p) for p in pids),
            "seconds": elapsed}


class Ranks:
    """N upstream ranks with markers: real debugpy ranks (dbgfwd-rank) or cheap echo listeners."""

    def __init__(self, workdir: Path, count: int, real: bool, base_port: int):
        self.runtime = workdir / f"run-{count}"
        self.count, self.real = count, real
        self.procs: list[RankProcess] = []
        self.cheap: EchoServer | None = None
        if real:
            program = write_program(workdir)
            self.procs = [start_rank(program, r, r, self.runtime, base_port=base_port, world_size=count)
                          for r in range(count)]
            wait_for_markers(self.runtime, set(range(count)), timeout=600, procs=self.procs)
        else:
            self.cheap = EchoServer.start(port=base_port, rank=0, count=count, marker_dir=self.runtime, timeout=300)

    def stop(self) -> None:
        for p in self.procs:
            p.stop()
        if self.cheap:
            self.cheap.stop()


def attach_to_ready(workdir: Path, count: int, real: bool, idle_seconds: float = 0.0, status_runs: int = 0) -> dict:
    """Start `dbgfwd attach` against `count` running ranks; time until all are ready in session.json.

    With idle_seconds, also samples the attach process's idle CPU and RSS afterwards (and the same
    for `count` socat forwarders as the baseline).
    """
    base = _port_block(count)
    ranks = Ranks(workdir, count, real, base)
    ws = workdir / f"ws-scale-{count}"
    ws.mkdir(exist_ok=True)
    out: dict = {"ranks": count, "upstream": "debugpy" if real else "cheap listeners"}
    try:
        attach = DbgfwdAttach(["--provider", "local", "--runtime-dir", str(ranks.runtime), "--base-port", str(base)],
                              ws, workdir / f"attach-scale-{count}.log")
        try:
            out["ready_s"] = attach.wait_ready(count, timeout=300)
            out["launch_json_s"] = attach.launch_json_s
            out["threads_ready"] = threads_of(attach.proc.pid)
            out["rss_mb_ready"] = rss_mb(attach.proc.pid)
            status = [sys.executable, "-m", "dbgfwd", "status", "-w", str(ws)]
            if status_runs:  # while the attach it reads still does its start-up work beside it (2 cores)
                out["status_starting"] = command_time(status, status_runs)
            if idle_seconds or status_runs:
                time.sleep(2.0)  # let launch.json/session writes settle
            if status_runs:  # the figure: a running attach, as users run `status` beside it
                out["status"] = command_time(status, status_runs)
            if idle_seconds:
                out["idle"] = idle_cost([attach.proc.pid], idle_seconds)
                out["threads_idle"] = threads_of(attach.proc.pid)
                out["socat_idle"] = _socat_idle(attach.endpoints(), idle_seconds)
        finally:
            attach.stop()
    finally:
        ranks.stop()
    return out


def _socat_idle(endpoints: dict, seconds: float) -> dict:
    """The same number of idle socat forwarders (one process per port, as people run it)."""
    procs = []
    try:
        for _, (_, port) in endpoints.items():
            procs.append(subprocess.Popen(["socat", f"TCP-LISTEN:{free_port()},bind=127.0.0.1,reuseaddr,fork",
                                           f"TCP:127.0.0.1:{port}"], stdin=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        time.sleep(1.0)
        return idle_cost([p.pid for p in procs], seconds)
    except FileNotFoundError:
        return {"skipped": "socat not installed"}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


def _port_block(count: int) -> int:
    from dbgfwd.plan.ports import port_is_free

    base = 21000
    while base + count + 1100 < 60000:
        # the ranks' own ports and the local ports dbgfwd picks (base + 1000 + rank) must be free
        if all(port_is_free(base + i) and port_is_free(base + 1000 + i) for i in range(count)):
            return base
        base += count + 101
    raise RuntimeError("no free port block")


def command_time(cmd: list[str], runs: int) -> dict:
    """Median wall time of `cmd`, byte-compiled as an installed package is (see dbgfwd_env): one unmeasured run
    first writes the bytecode."""
    env = dbgfwd_env()
    samples = []
    for i in range(runs + 1):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT, check=True)
        if i:
            samples.append(time.perf_counter() - t)
    return {"median_ms": statistics.median(samples) * 1000, "min_ms": min(samples) * 1000, "runs": runs}


def help_time(runs: int) -> dict:
    """`dbgfwd --help` wall time, against the bare interpreter start measured the same way."""
    return {
        "dbgfwd --help": command_time([sys.executable, "-m", "dbgfwd", "--help"], runs),
        "dbgfwd attach --help": command_time([sys.executable, "-m", "dbgfwd", "attach", "--help"], runs),
        "dbgfwd-rank --help": command_time([sys.executable, "-m", "dbgfwd.rank", "--help"], runs),
        "python -c pass": command_time([sys.executable, "-c", "pass"], runs),
    }


def launch_json_write(workdir: Path, count: int, repeats: int = 3) -> dict:
    """Writing launch.json (and tasks.json) for `count` ranks: into no file, then over dbgfwd's own entries."""
    from dbgfwd.vscode import AttachEntry, LaunchOptions, update_launch_json

    path = workdir / f"ws-launch-{count}" / ".vscode" / "launch.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [AttachEntry(r, 20000 + r, f"node{r // 8}", r % 8) for r in range(count)]
    fresh, again = [], []
    for _ in range(repeats):
        if path.exists():
            path.unlink()
        t = time.perf_counter()
        update_launch_json(path, entries, LaunchOptions())
        fresh.append(time.perf_counter() - t)
        moved = [AttachEntry(e.rank, e.local_port + 1, e.node, e.local_rank) for e in entries]
        t = time.perf_counter()
        update_launch_json(path, moved, LaunchOptions())
        again.append(time.perf_counter() - t)
    return {"ranks": count, "new_s": statistics.median(fresh), "update_s": statistics.median(again)}
