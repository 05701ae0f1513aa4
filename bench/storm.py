"""An attach storm: N debuggers attach at once (what a compound of N ranks does in VS Code).

Each debugger does the whole VS Code start: initialize, attach, setBreakpoints, configurationDone, then waits
for the rank to stop at the breakpoint. The figure is the time from the common start until the last one is
stopped, through `dbgfwd attach` (local provider) and, in the same run, straight to the ranks' own ports.

    python -m bench.storm [--ranks 64]           # local provider
    python -m bench.storm --ssh [--ranks 64]     # dbgfwd ssh to a test host (root)
    python -m bench.storm --kubernetes [--ranks 64] [--per-pod 8]   # dbgfwd kubernetes, the test API server (root)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.paths import ROOT, DbgfwdAttach
from bench.scale import Ranks, _port_block
from tests.support.dap import DapClient
from tests.support.ranks import BREAK_LINE, write_program


def storm(endpoints: dict[int, tuple[str, int]], program: str) -> dict:
    """Every endpoint attached at once; seconds until all are stopped at BREAK_LINE (then all released)."""
    start = threading.Barrier(len(endpoints) + 1)
    stopped_at: dict[int, float] = {}
    errors: dict[int, str] = {}
    clients: dict[int, DapClient] = {}

    def one(rank: int, host: str, port: int) -> None:
        start.wait()
        try:
            client = DapClient(host, port, timeout=120)
            clients[rank] = client
            client.attach({program: [BREAK_LINE]})
            stopped = client.wait_stopped(120)
            stopped_at[rank] = time.monotonic()
            client.continue_(stopped["body"]["threadId"])
        except Exception as exc:  # a failed debugger is a figure too, not a crash of the bench
            errors[rank] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=one, args=(r, h, p), daemon=True) for r, (h, p) in endpoints.items()]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join(180)
    for client in clients.values():
        try:
            client.disconnect()
        except Exception:
            pass
    times = sorted(at - t0 for at in stopped_at.values())
    return {"debuggers": len(endpoints), "stopped": len(times), "errors": errors,
            "all_stopped_s": times[-1] if len(times) == len(endpoints) else None,
            "median_stopped_s": times[len(times) // 2] if times else None}


def _ratio(out: dict, path: str) -> float | None:
    """The storm through `path` against the direct one, in time until all stopped (None if either fell short)."""
    d, f = out["direct"]["all_stopped_s"], out[path]["all_stopped_s"]
    return (f / d) if d and f else None


SETTLE_S = float(os.environ.get("STORM_SETTLE", "2"))


def storm_apart(endpoints: dict[int, tuple[str, int]], program: str) -> dict:
    """`storm` run by a Python process of its own: when this process also serves the test API server, 64 debugger
    threads beside it would share its interpreter lock and slow the server down (a real API server is elsewhere).
    Both paths first settle for SETTLE_S seconds: a compound is started some time after the ranks are up, and the
    first seconds after start (ranks importing, dbgfwd's first probe rounds and launch.json) made single runs
    range from 1.1x to 2.9x."""
    import subprocess

    time.sleep(SETTLE_S)

    code = ("import json, sys\nfrom bench.storm import storm\n"
            "args = json.loads(sys.stdin.read())\n"
            "print(json.dumps(storm({int(k): tuple(v) for k, v in args['endpoints'].items()}, args['program'])))")
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps({"endpoints": endpoints, "program": program}),
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the storm process failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def run(workdir: Path, count: int, log=lambda msg: None) -> dict:
    base = _port_block(count)
    log(f"storm: starting {count} debugpy ranks")
    ranks = Ranks(workdir, count, real=True, base_port=base)
    program = str(write_program(workdir))
    out: dict = {"ranks": count}
    try:
        direct = {r: ("127.0.0.1", base + r) for r in range(count)}
        log(f"storm: {count} debuggers straight to the ranks")
        out["direct"] = storm(direct, program)
        ws = workdir / "ws-storm"
        ws.mkdir(exist_ok=True)
        attach = DbgfwdAttach(["--provider", "local", "--runtime-dir", str(ranks.runtime), "--base-port", str(base),
                               "--no-job-session"], ws, workdir / "attach-storm.log")
        try:
            attach.wait_ready(count, timeout=300)
            log(f"storm: {count} debuggers through dbgfwd local")
            out["dbgfwd-local"] = storm(attach.endpoints(), program)
        finally:
            attach.stop()
    finally:
        ranks.stop()
    out["ratio"] = _ratio(out, "dbgfwd-local")
    return out


def run_ssh(count: int, log=lambda msg: None) -> dict:
    """The same storm through `dbgfwd attach --provider ssh`: `count` debugpy ranks on one test host (a network
    namespace with a real sshd; root), debuggers in the lab's client namespace. The direct baseline reaches the
    ranks over the lab's link (they listen on every address of the host for it), with no SSH in between."""
    import os

    from bench import bench_ssh
    from tests.support.netns import Lab
    from tests.support.ranks import start_rank, wait_for_markers

    out: dict = {"ranks": count, "provider": "ssh"}
    with Lab() as lab:
        host = lab.add_host("h1")
        config = lab.write_ssh_config()
        inside_dir = f"/tmp/dbgfwd-{os.getuid()}"
        program = write_program(lab.directory)
        base = 5678
        log(f"storm over ssh: starting {count} debugpy ranks on a test host")
        procs = [start_rank(program, r, r, lab.directory / "ranks", base_port=base, world_size=count,
                            cmd_prefix=host.prefix(), extra_args=["--host", "0.0.0.0"],
                            extra_env={"DBGFWD_RUNTIME_DIR": inside_dir, "PYTHONPATH": str(ROOT)})
                 for r in range(count)]
        try:
            wait_for_markers(host.path(inside_dir), set(range(count)), timeout=600, procs=procs)
            with lab.client.inside():
                log(f"storm over ssh: {count} debuggers straight to the ranks over the link")
                out["direct"] = storm({r: (host.address, base + r) for r in range(count)}, str(program))
            ws = lab.directory / "ws-storm"
            attach = bench_ssh.attach(lab, ws, config, ["h1"], "--no-job-session", "--local-base-port", "40000")
            try:
                deadline = time.monotonic() + 300
                while not bench_ssh.all_ready(ws, count):
                    if attach.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((ws / "attach.log").read_text(errors="replace")[-2000:])
                    time.sleep(0.05)
                endpoints = {int(r["rank"]): ("127.0.0.1", int(r["local_port"])) for r in bench_ssh.ranks_state(ws)}
                with lab.client.inside():
                    log(f"storm over ssh: {count} debuggers through dbgfwd ssh")
                    out["dbgfwd-ssh"] = storm(endpoints, str(program))
            finally:
                bench_ssh.stop(attach)
        finally:
            for p in procs:
                p.stop()
    out["ratio"] = _ratio(out, "dbgfwd-ssh")
    return out


def run_k8s(count: int, per_pod: int = 8, log=lambda msg: None) -> dict:
    """The same storm through `dbgfwd attach --provider kubernetes pytorchjob/...`: count/per_pod pods on the test
    API server (each a network namespace; root), `per_pod` debugpy ranks each, every debugger's bytes through the
    port-forward websocket. A pod's loopback is reachable only through the API server, so the direct baseline is
    the same program's ranks on this machine, attached straight to their ports in the same run."""
    from tests.support import k8s_jobs
    from tests.support.k8s_server import K8sServer

    pods = max(1, count // per_pod)
    count = pods * per_pod
    out: dict = {"ranks": count, "provider": "kubernetes", "pods": pods}
    with tempfile.TemporaryDirectory(prefix="dbgfwd-storm-k8s-") as tmp:
        work = Path(tmp)
        base = _port_block(count)
        log(f"storm over kubernetes: {count} debugpy ranks on this machine for the direct baseline")
        ranks = Ranks(work, count, real=True, base_port=base)
        try:
            out["direct"] = storm_apart({r: ("127.0.0.1", base + r) for r in range(count)}, str(write_program(work)))
        finally:
            ranks.stop()
        with K8sServer() as srv:
            log(f"storm over kubernetes: {pods} pods x {per_pod} debugpy ranks")
            program = k8s_jobs.pytorchjob(srv, "storm", "ml", workers=pods - 1, ranks_per_pod=per_pod)
            deadline = time.monotonic() + 600
            while not all(k8s_jobs.rank_markers(p) >= per_pod for p in srv.pods.values()):
                if time.monotonic() > deadline:
                    raise RuntimeError("the pods' ranks did not start in 10 minutes")
                time.sleep(0.1)
            ws = work / "ws-storm-k8s"
            ws.mkdir()
            attach = DbgfwdAttach(["pytorchjob/storm", "-n", "ml", "--kubeconfig",
                                   str(srv.kubeconfig(srv.root / "kubeconfig")), "--no-job-session"],
                                  ws, work / "attach-storm-k8s.log")
            try:
                attach.wait_ready(count, timeout=300)
                log(f"storm over kubernetes: {count} debuggers through dbgfwd kubernetes")
                from bench.scale import cpu_seconds

                before = (cpu_seconds(attach.proc.pid), time.process_time())
                out["dbgfwd-kubernetes"] = storm_apart(attach.endpoints(), str(program))
                # Where the extra time goes: dbgfwd's CPU, and the test API server's (it runs in this process).
                out["cpu_s"] = {"dbgfwd": round(cpu_seconds(attach.proc.pid) - before[0], 3),
                                "api_server": round(time.process_time() - before[1], 3)}
            finally:
                attach.stop()
    out["ratio"] = _ratio(out, "dbgfwd-kubernetes")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, default=64)
    ap.add_argument("--ssh", action="store_true", help="through dbgfwd ssh to a test host instead (root)")
    ap.add_argument("--kubernetes", action="store_true", help="through dbgfwd kubernetes to test pods instead (root)")
    ap.add_argument("--per-pod", type=int, default=8, help="ranks per pod with --kubernetes")
    args = ap.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.kubernetes:
        print(json.dumps(run_k8s(args.ranks, args.per_pod, log), indent=2))
        return 0
    if args.ssh:
        print(json.dumps(run_ssh(args.ranks, log), indent=2))
        return 0
    with tempfile.TemporaryDirectory(prefix="dbgfwd-storm-") as tmp:
        result = run(Path(tmp), args.ranks, log=log)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
