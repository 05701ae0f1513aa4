"""dbgfwd benchmarks: `python -m bench [--quick] [--paths direct,socat,dbgfwd-local,...] [--skip-scale]`.

Measures, in one run, every available forward path (bench/paths.py) against the same upstream
ranks (a real debugpy rank under dbgfwd-rank, and an echo/sink server), plus attach-to-ready for
8/64/256/1024 ranks, idle cost of 1024 forwards, an attach storm of 64 debuggers and CLI start time. Prints a table with ratios against
the baselines measured in the same run and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench import bench_stacks, measure, paths, provider_scale, report, scale, storm
from tests.support.echo_server import EchoServer
from tests.support.ranks import (
    BREAK_LINE,
    PLAIN_BREAK_LINE,
    start_plain_rank,
    start_rank,
    wait_for_markers,
    write_program,
)

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller counts (about 2 minutes instead of ~6)")
    p.add_argument("--paths", default=None,
                   help="comma-separated paths to measure (default: all; " +
                        ", ".join(paths.slug(x.name) for x in paths.PATHS) + ")")
    p.add_argument("--skip-scale", action="store_true", help="skip attach-to-ready / idle / --help measurements")
    p.add_argument("--scale", default=None, help="rank counts for attach-to-ready (default 8,64,256,1024)")
    p.add_argument("--idle-seconds", type=float, default=None,
                   help="how long idle forwards are watched at the largest count (default 10, --quick 5)")
    p.add_argument("--storm", type=int, default=None,
                   help="debuggers in the attach storm (default 64, --quick 16; 0 skips it)")
    p.add_argument("--skip-providers", action="store_true",
                   help="skip attach-to-ready through Kubernetes (128 pods x 8) and SSH (4 hosts x 64); root only")
    p.add_argument("--out", type=Path, default=None, help="JSON output file (default bench/results/<time>.json)")
    return p.parse_args(argv)


def settings(quick: bool) -> dict:
    return {
        "dap_requests": 200 if quick else 1000,
        "dap_plain_requests": 30 if quick else 100,  # ~44 ms each: the point is made with fewer
        "rtt_messages": 2000 if quick else 10000,
        "bulk_bytes": (32 if quick else 256) * 1_000_000,
        "reconnect_repeats": 2 if quick else 5,
        "reconnect_outage_s": 2.0,
        "idle_seconds": 5.0 if quick else 10.0,
        # Through remote providers, idle is measured once probes have settled (SETTLED_AFTER s after ready),
        # over 30 s as issue 16 says; --quick takes 5 s right after ready, which is start-up, not idle.
        "provider_idle_seconds": 5.0 if quick else 30.0,
        "provider_settle_seconds": 2.0 if quick else provider_scale.SETTLED_AFTER,
        "help_runs": 5 if quick else 10,
        "real_ranks_max": 8 if quick else 64,
        "storm": 16 if quick else 64,
    }


class Upstreams:
    """Rank 0: a real debugpy rank (dbgfwd-rank). Rank 1: the echo/sink server (restartable).
    Rank 2: the same program under plain `debugpy.listen()`, for DAP figures without dbgfwd-rank."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.runtime = workdir / "run"
        self.base = scale._port_block(3)
        self.program = write_program(workdir)
        self.rank = start_rank(self.program, 0, 0, self.runtime, base_port=self.base, world_size=2)
        wait_for_markers(self.runtime, {0}, procs=[self.rank])
        # base + local rank, where providers without markers (batch) look, as the lab and pod worlds do
        self.echo = EchoServer.start(port=self.base + 1, rank=1, local_rank=1, marker_dir=self.runtime)
        self.echo_port = self.echo.port
        self._start_plain(workdir, self.runtime, self.runtime)

    def _start_plain(self, directory: Path, inside_dir, runtime: Path, prefix: list[str] | None = None) -> None:
        self.plain = start_plain_rank(directory, 2, self.base + 2, inside_dir, cmd_prefix=prefix,
                                      extra_env={"PYTHONPATH": str(paths.ROOT)})
        self.plain_program = directory / "plain_rank.py"
        wait_for_markers(runtime, {2}, procs=[self.plain])

    def env(self) -> paths.BenchEnv:
        return paths.BenchEnv(self.workdir, self.runtime, self.base,
                              {0: self.base, 1: self.echo_port, 2: self.base + 2})

    def restart_echo_after(self, outage: float) -> float:
        """Kill the echo server, keep it down `outage` s, restart it on the same port; returns when it listened."""
        self.echo.kill()
        time.sleep(outage)
        self.echo = EchoServer.start(port=self.echo_port, rank=1, local_rank=1, marker_dir=self.runtime)
        return self.echo.listened

    def stop(self) -> None:
        self.echo.stop()
        self.rank.stop()
        self.plain.stop()


class LabUpstreams(Upstreams):
    """The same two ranks on a test host `h1` (its own network namespace, /tmp and sshd), reached from
    the lab's client namespace: where ssh -L and dbgfwd ssh run and the measuring client connects."""

    def __init__(self, workdir: Path):
        import os

        from tests.support.netns import Lab

        self.workdir = workdir
        self.lab = Lab()
        try:
            self.host = self.lab.add_host("h1")
            self.ssh_config = self.lab.write_ssh_config()
            self.inside_dir = f"/tmp/dbgfwd-{os.getuid()}"
            self.runtime = self.host.path(self.inside_dir)
            self.base = 5678
            self.program = write_program(self.lab.directory)
            self.rank = start_rank(self.program, 0, 0, self.lab.directory / "ranks", base_port=self.base, world_size=2,
                                   cmd_prefix=self.host.prefix(),
                                   extra_env={"DBGFWD_RUNTIME_DIR": self.inside_dir,
                                              "PYTHONPATH": str(paths.ROOT)})
            wait_for_markers(self.runtime, {0}, procs=[self.rank])
            self.echo = self._start_echo(self.base + 1)
            self.echo_port = self.echo.port
            self._start_plain(self.lab.directory, self.inside_dir, self.runtime, self.host.prefix())
        except BaseException:
            self.lab.close()
            raise

    def _start_echo(self, port: int) -> EchoServer:
        return EchoServer.start(port=port, rank=1, local_rank=1, marker_dir=self.inside_dir,
                                cmd_prefix=self.host.prefix())

    def env(self) -> paths.BenchEnv:
        lab = self.lab

        class LabEnv(paths.BenchEnv):
            def enter(self):
                return lab.client.inside()

        return LabEnv(self.workdir, self.runtime, self.base, {0: self.base, 1: self.echo_port, 2: self.base + 2},
                      prefix=tuple(lab.client.prefix()), ssh_config=self.ssh_config, host="h1")

    def restart_echo_after(self, outage: float) -> float:
        self.echo.kill()
        time.sleep(outage)
        self.echo = self._start_echo(self.echo_port)
        return self.echo.listened

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.lab.close()


class PodUpstreams(LabUpstreams):
    """The same two ranks inside one pod of the test apiserver (a network namespace with its own /tmp),
    started there as bench/bench_k8s.py starts its echo pod; the client stays on this machine and
    reaches them only through the apiserver's port-forward."""

    NAMESPACE, POD = "bench", "bench-0"

    def __init__(self, workdir: Path):
        import os

        from tests.support import k8s_jobs
        from tests.support.k8s_server import K8sServer

        self.workdir = workdir
        self.srv = K8sServer().__enter__()
        try:
            self.kubeconfig = self.srv.kubeconfig(workdir / "kubeconfig")
            self.pod = self.srv.add_pod(self.POD, self.NAMESPACE, labels={"app": "bench"},
                                        env={"PYTHONPATH": str(paths.ROOT)})  # container: sleep infinity
            self.prefix = self.pod.runtime.prefix()
            self.inside_dir = f"/tmp/dbgfwd-{os.getuid()}"
            self.runtime = self.pod.runtime.tmp / self.inside_dir.removeprefix("/tmp/")
            self.base = 5678
            self.program = write_program(k8s_jobs.app_dir(self.srv))  # outside /tmp: same path in the pod
            self.rank = start_rank(self.program, 0, 0, self.srv.root / "ranks", base_port=self.base, world_size=2,
                                   cmd_prefix=self.prefix, extra_env={"DBGFWD_RUNTIME_DIR": self.inside_dir,
                                                                      "PYTHONPATH": str(paths.ROOT)})
            wait_for_markers(self.runtime, {0}, procs=[self.rank])
            self.echo = self._start_echo(self.base + 1)
            self.echo_port = self.echo.port
            self._start_plain(self.program.parent, self.inside_dir, self.runtime, self.prefix)
        except BaseException:
            self.srv.stop()
            raise

    def _start_echo(self, port: int) -> EchoServer:
        return EchoServer.start(port=port, rank=1, local_rank=1, marker_dir=self.inside_dir, cmd_prefix=self.prefix)

    def env(self) -> paths.BenchEnv:
        return paths.BenchEnv(self.workdir, self.runtime, self.base,
                              {0: self.base, 1: self.echo_port, 2: self.base + 2}, host=self.POD, kubeconfig=self.kubeconfig, namespace=self.NAMESPACE)

    def stop(self) -> None:
        try:
            Upstreams.stop(self)
        finally:
            self.srv.stop()


def measure_path(path: paths.BenchPath, up: Upstreams, cfg: dict, log) -> dict:
    out: dict = {}
    env = up.env()
    with path.open(env) as eps, env.enter():
        log(f"  {path.name}: DAP round trips, rank under dbgfwd-rank ({cfg['dap_requests']} each of threads, "
            "evaluate, stackTrace)")
        out["dap"] = measure.dap_rtt(eps[0], str(up.program), BREAK_LINE, cfg["dap_requests"])
        log(f"  {path.name}: DAP round trips, plain debugpy.listen() rank ({cfg['dap_plain_requests']} each)")
        out["dap_plain"] = measure.dap_rtt(eps[2], str(up.plain_program), PLAIN_BREAK_LINE,
                                           cfg["dap_plain_requests"])
        log(f"  {path.name}: raw round trips ({cfg['rtt_messages']} x 64 B)")
        out["rtt"] = measure.raw_rtt(eps[1], cfg["rtt_messages"])
        log(f"  {path.name}: bulk throughput ({cfg['bulk_bytes'] // 1_000_000} MB)")
        out["bulk"] = measure.throughput(eps[1], cfg["bulk_bytes"])
        log(f"  {path.name}: reconnect after a {cfg['reconnect_outage_s']} s upstream outage "
            f"(x{cfg['reconnect_repeats']})")
        samples = []
        for _ in range(cfg["reconnect_repeats"]):
            client = measure.Reconnector(eps[1])
            up.echo.kill()
            client.start()
            back = up.restart_echo_after(cfg["reconnect_outage_s"])
            client.join(60)
            if client.done_at is None:
                raise RuntimeError(f"{path.name}: no successful connection within 60 s of the upstream's return")
            samples.append(max(0.0, client.done_at - back))
        out["reconnect"] = {"median_s": sorted(samples)[len(samples) // 2], "max_s": max(samples),
                            "samples_s": samples}
    return out


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = settings(args.quick)
    chosen = paths.select(args.paths.split(",") if args.paths else None)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    results: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": args.quick, "settings": cfg,
                     "machine": {"python": platform.python_version(), "platform": platform.platform(),
                                 "cpus": __import__("os").cpu_count()},
                     "paths": {}, "skipped": {}, "scale": [], "cli": {}, "stacks": []}
    with tempfile.TemporaryDirectory(prefix="dbgfwd-bench-") as tmp:
        workdir = Path(tmp)
        runnable = []
        for path in chosen:
            reason = path.unavailable()
            if reason:
                log(f"skip {path.name}: {reason}")
                results["skipped"][path.name] = reason
            else:
                runnable.append(path)
        for world, make in (("local", Upstreams), ("ssh-lab", LabUpstreams), ("k8s-pod", PodUpstreams)):
            group = [p for p in runnable if p.world == world]
            if not group:
                continue
            up = make(workdir)
            try:
                for path in group:
                    log(f"path {path.name}")
                    try:
                        results["paths"][path.name] = measure_path(path, up, cfg, log)
                    except Exception as exc:  # one broken path must not lose the others' figures
                        log(f"  {path.name} FAILED: {type(exc).__name__}: {exc}")
                        results["skipped"][path.name] = f"failed: {type(exc).__name__}: {exc}"
            finally:
                up.stop()
        if not args.skip_scale:
            counts = [int(c) for c in (args.scale or "8,64,256,1024").split(",")]
            for n in counts:
                real = n <= cfg["real_ranks_max"]
                log(f"attach-to-ready: {n} ranks ({'debugpy' if real else 'cheap listeners'})")
                idle = (args.idle_seconds or cfg["idle_seconds"]) if n == max(counts) else 0.0
                results["scale"].append(scale.attach_to_ready(workdir, n, real, idle_seconds=idle,
                                                              status_runs=cfg["help_runs"] if n == max(counts) else 0))
            results["launch_json"] = [scale.launch_json_write(workdir, n) for n in (256, 1024)]
            log("CLI start time")
            results["cli"] = scale.help_time(cfg["help_runs"])
            status = next((r["status"] for r in results["scale"] if r.get("status")), None)
            if status:
                results["cli"][f"dbgfwd status ({max(counts)} ranks)"] = status
            storm_n = cfg["storm"] if args.storm is None else args.storm
            if storm_n:
                log(f"attach storm: {storm_n} debuggers at once")
                results["storm"] = storm.run(workdir, storm_n, log)
            log("dbgfwd stacks: 4 and 64 ranks")
            results["stacks"] = [bench_stacks.stacks_time(workdir, n) for n in (4, 64)]
            if not args.skip_providers:
                results["provider_scale"] = provider_scale.run(
                    128, 8, 4, 64, args.idle_seconds or cfg["provider_idle_seconds"], None, log,
                    settle=cfg["provider_settle_seconds"])
                if storm_n and __import__("os").geteuid() == 0:
                    results["storm_ssh"] = storm.run_ssh(storm_n, log)
                    results["storm_k8s"] = storm.run_k8s(storm_n, 8, log)
    report.add_ratios(results)
    # Written before the table is printed: a fault in the table must not cost a run's figures.
    out = args.out or RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    (out.parent / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    report.print_table(results)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
