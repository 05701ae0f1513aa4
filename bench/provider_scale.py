"""Providers at scale: the same attach-to-ready and idle figures as bench/scale.py, through a remote provider.

    python -m bench.provider_scale [--pods 128] [--ranks-per-pod 8] [--hosts 4] [--ranks-per-host 64]
                                   [--nodes 16] [--ranks-per-node 8] [--idle-seconds 10]
                                   [--only kubernetes|ssh|batch]

Kubernetes: a PyTorchJob of `--pods` pods on the test API server (each pod a network namespace: root), each pod
running `--ranks-per-pod` cheap ranks (a listener and a marker each, forked from one Python). Figures: seconds
from `dbgfwd attach` start until launch.json is written and until every rank is ready; the attach's resident
memory and threads; its idle CPU. Pods start before the clock does. SCALE_TIMEOUT (seconds, default 600) bounds
the wait for every rank to be ready.
SSH: `--hosts` test hosts (network namespaces with a real sshd: root), each with `--ranks-per-host` listeners, all
ranks over one SSH connection per host; the same figures.
Batch: a multi-node parallel job of `--nodes` nodes x `--ranks-per-node` echo listeners (each node its own loopback
address) on moto, the AWS test double and the test SSM agent. SSM sessions open when a client connects, so besides
the same figures: seconds until one connection through EVERY rank, all made at once, has echoed (one SSM port
session each: StartSession, websocket, handshake), and the idle cost with those sessions open. Asserts nothing
about time.
"""

from __future__ import annotations

import argparse
import os
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.paths import DbgfwdAttach  # noqa: E402
from bench.scale import idle_cost, rss_mb, threads_of  # noqa: E402

NS = "scale"
KF = "training.kubeflow.org/"

# One Python per pod forks its ranks (a marker names one pid): 1024 cheap ranks cost ~1 MB each, not 15.
FORKING_RANKS = '''\
import os, socket, sys
from dbgfwd.rank import markers
n, node, nodes = int(sys.argv[1]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
base = int(os.environ.get("DBGFWD_BASE_PORT", "5678"))
kids = []
for lr in range(n):
    pid = os.fork()
    if pid == 0:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", base + lr))
        s.listen(8)
        markers.write_marker(markers.new_marker(node * n + lr, lr, base + lr, "127.0.0.1", nodes * n, "bench", []))
        while True:
            c, _ = s.accept()
            c.close()
    kids.append(pid)
for _ in kids:
    os.wait()
'''


# Seconds after ready from which a provider's figure counts as idle: readiness probes of targets that keep
# finding the same back off 5, 10, 20, 40 s, then stay at the provider's maximum (60 s for Kubernetes).
SETTLED_AFTER = 120.0


def kubernetes(pods: int, per_pod: int, idle_seconds: float = 0.0, log=lambda msg: None,
               settle: float = 2.0) -> dict:
    from tests.support import k8s_jobs
    from tests.support.k8s_server import K8sServer

    out: dict = {"provider": "kubernetes", "pods": pods, "ranks_per_pod": per_pod, "ranks": pods * per_pod}
    with K8sServer() as srv, tempfile.TemporaryDirectory(prefix="dbgfwd-k8s-scale-") as tmp:
        kubeconfig = srv.kubeconfig(srv.root / "kubeconfig")
        program = k8s_jobs.app_dir(srv) / "forking_ranks.py"
        program.write_text(FORKING_RANKS)
        t0 = time.perf_counter()
        started = []
        for i in range(pods):
            rtype, index = ("master", 0) if i == 0 else ("worker", i - 1)
            labels = {KF + "job-name": "train", KF + "replica-type": rtype, KF + "replica-index": str(index),
                      KF + "operator-name": "pytorchjob-controller"}
            started.append(srv.add_pod(f"train-{rtype}-{index}", NS, labels=labels,
                                       env={"RANK": str(i), "WORLD_SIZE": str(pods), "PYTHONPATH": str(ROOT)},
                                       command=[sys.executable, str(program), str(per_pod)],
                                       working_dir=str(program.parent), owner=("PyTorchJob", "train")))
        for pod in started:
            deadline = time.monotonic() + 300
            while k8s_jobs.rank_markers(pod) < per_pod:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pod {pod.name}: ranks never started: {pod.runtime.log_text()[-500:]}")
                time.sleep(0.05)
        out["pods_started_s"] = round(time.perf_counter() - t0, 2)  # not part of any figure
        log(f"  {pods} pods x {per_pod} ranks running ({out['pods_started_s']} s); attaching")
        ws = Path(tmp) / "ws"
        ws.mkdir()
        attach = DbgfwdAttach(["pytorchjob/train", "-n", NS, "--kubeconfig", str(kubeconfig)], ws,
                              Path(tmp) / "attach.log")
        try:
            out["ready_s"] = attach.wait_ready(pods * per_pod, timeout=float(os.environ.get("SCALE_TIMEOUT", "600")))
            out["launch_json_s"] = attach.launch_json_s
            out["rss_mb_ready"] = rss_mb(attach.proc.pid)
            out["threads_ready"] = threads_of(attach.proc.pid)
            session = attach.session() or {}
            out["ranks_seen"] = len(session.get("ranks", []))
            if idle_seconds:
                time.sleep(settle)  # ready, then the idle measurement
                out["idle"] = {**idle_cost([attach.proc.pid], idle_seconds), "after_ready_s": settle}
        finally:
            attach.stop()
    return out


def ssh(hosts: int, per_host: int, idle_seconds: float = 0.0, log=lambda msg: None,
        settle: float = 2.0) -> dict:
    from bench import bench_ssh
    from tests.support.netns import Lab

    out: dict = {"provider": "ssh", "hosts": hosts, "ranks_per_host": per_host, "ranks": hosts * per_host}
    with Lab() as lab:
        names = [f"n{i}" for i in range(hosts)]
        servers = [lab.add_host(name).popen([sys.executable, "-c", bench_ssh.SERVERS, "ranks",
                                             *[str(5678 + i) for i in range(per_host)]]) for name in names]
        try:
            config = lab.write_ssh_config()
            for name in names:
                bench_ssh.wait_until(lambda h=lab.hosts[name]: len(bench_ssh.listening(h)) >= per_host + 1)
            log(f"  {hosts} hosts x {per_host} ranks listening; attaching")
            ws = lab.directory / "ws-scale"
            t0 = time.perf_counter()
            run = bench_ssh.attach(lab, ws, config, names, "--ranks-per-node", str(per_host),
                                   "--local-base-port", "40000")
            try:
                launch = ws / ".vscode" / "launch.json"
                deadline = time.monotonic() + 300
                while not bench_ssh.all_ready(ws, hosts * per_host):
                    if out.get("launch_json_s") is None and launch.exists():
                        out["launch_json_s"] = time.perf_counter() - t0
                    if run.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("attach ended or timed out: "
                                           + (ws / "attach.log").read_text(errors="replace")[-2000:])
                    time.sleep(0.005)
                out["ready_s"] = time.perf_counter() - t0
                out["launch_json_s"] = out.get("launch_json_s") or out["ready_s"]
                out["rss_mb_ready"] = rss_mb(run.pid)
                out["threads_ready"] = threads_of(run.pid)
                out["ranks_seen"] = len(bench_ssh.ranks_state(ws))
                if idle_seconds:
                    time.sleep(settle)  # ready, then the idle measurement
                    out["idle"] = {**idle_cost([run.pid], idle_seconds), "after_ready_s": settle}
            finally:
                bench_ssh.stop(run)
        finally:
            for p in servers:
                p.kill()
                p.wait(5)
    return out


# One process serves every node's listeners: echo what comes, so a connection proves its SSM session carries data.
ECHOES = '''\
import selectors, socket, sys
sel = selectors.DefaultSelector()
for spec in sys.argv[1:]:
    ip, port = spec.rsplit(":", 1)
    s = socket.create_server((ip, int(port)), backlog=64)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, None)
print("up", flush=True)
while True:
    for key, _ in sel.select():
        if key.data is None:
            c, _ = key.fileobj.accept()
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ, "c")
        else:
            try:
                data = key.fileobj.recv(65536)
            except OSError:
                data = b""
            if data:
                key.fileobj.sendall(data)
            else:
                sel.unregister(key.fileobj)
                key.fileobj.close()
'''


def _echo_all(endpoints: list[tuple[str, int]], timeout: float) -> float:
    """Seconds until a connection through each endpoint, all opened at once, has echoed one message."""
    import socket
    import threading

    errors: list[str] = []
    go = threading.Event()

    def one(addr):
        go.wait()
        try:
            with socket.create_connection(addr, timeout=timeout) as c:
                c.sendall(b"ping")
                got = b""
                while len(got) < 4:
                    chunk = c.recv(16)
                    if not chunk:
                        break
                    got += chunk
                if got != b"ping":
                    errors.append(f"{addr}: {got!r}")
        except OSError as exc:
            errors.append(f"{addr}: {exc}")

    threads = [threading.Thread(target=one, args=(a,), daemon=True) for a in endpoints]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    go.set()
    for t in threads:
        t.join(timeout + 5)
    took = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(endpoints)} connections failed: {errors[:3]}")
    return took


def batch(nodes: int, per_node: int, idle_seconds: float = 0.0, log=lambda msg: None,
          settle: float = 2.0) -> dict:
    import subprocess

    from tests.support.batch_world import BatchWorld
    from tests.support.net import free_base_on

    out: dict = {"provider": "batch", "nodes": nodes, "ranks_per_node": per_node, "ranks": nodes * per_node}
    ips = [f"127.0.1.{i + 1}" for i in range(nodes)]
    base = free_base_on(ips, per_node)
    server = subprocess.Popen([sys.executable, "-c", ECHOES, *[f"{ip}:{base + i}" for ip in ips
                                                                   for i in range(per_node)]],
                              stdout=subprocess.PIPE, text=True)
    try:
        if server.stdout.readline().strip() != "up":
            raise RuntimeError("the node listeners did not start")
        with BatchWorld() as world, tempfile.TemporaryDirectory(prefix="dbgfwd-batch-scale-") as tmp:
            job = world.mnp_job([(world.instance()[1], ip) for ip in ips])
            log(f"  a {nodes}-node job x {per_node} ranks listening; attaching")
            ws = Path(tmp) / "ws"
            ws.mkdir()
            attach = DbgfwdAttach(["--provider", "batch", job, "--ranks-per-node", str(per_node), "--base-port",
                                   str(base)], ws, Path(tmp) / "attach.log", extra_env=world.env())
            try:
                timeout = float(os.environ.get("SCALE_TIMEOUT", "600"))
                out["ready_s"] = attach.wait_ready(nodes * per_node, timeout=timeout)
                out["launch_json_s"] = attach.launch_json_s
                out["rss_mb_ready"] = rss_mb(attach.proc.pid)
                out["threads_ready"] = threads_of(attach.proc.pid)
                endpoints = sorted(attach.endpoints().values())
                out["ranks_seen"] = len(endpoints)
                out["first_echo_all_s"] = _echo_all(endpoints, timeout=120)
                out["ssm_sessions"] = len(world.fake.ops("StartSession"))
                out["rss_mb_sessions"] = rss_mb(attach.proc.pid)
                out["threads_sessions"] = threads_of(attach.proc.pid)
                if idle_seconds:
                    time.sleep(settle)  # ready, then the idle measurement
                    out["idle"] = {**idle_cost([attach.proc.pid], idle_seconds), "after_ready_s": settle}
            finally:
                attach.stop()
            if world.agent.violations:
                raise RuntimeError(f"the SSM agent saw protocol violations: {world.agent.violations[:3]}")
    finally:
        server.kill()
        server.wait(5)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.provider_scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=128)
    ap.add_argument("--ranks-per-pod", type=int, default=8)
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--ranks-per-host", type=int, default=64)
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--ranks-per-node", type=int, default=8)
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--settle-seconds", type=float, default=2.0,
                    help="wait this long after ready before measuring idle: settled probes drift to once a minute, "
                         f"so idle as issue 16 means it needs {SETTLED_AFTER:g} s (less measures start-up)")
    ap.add_argument("--only", choices=("kubernetes", "ssh", "batch"), default=None)
    args = ap.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    res = run(args.pods, args.ranks_per_pod, args.hosts, args.ranks_per_host, args.idle_seconds, args.only, log,
              nodes=args.nodes, per_node=args.ranks_per_node, settle=args.settle_seconds)
    print(json.dumps(res, indent=2))
    return 0


def run(pods: int, per_pod: int, hosts: int, per_host: int, idle_seconds: float, only: str | None, log,
        nodes: int = 16, per_node: int = 8, settle: float = 2.0) -> list:
    """Every provider's figures; a provider that cannot run here (not root) is skipped with the reason."""
    import os

    out = []
    for name, needs_root, what, run_one in (
            ("kubernetes", True, f"{pods} pods x {per_pod} ranks",
             lambda: kubernetes(pods, per_pod, idle_seconds, log, settle)),
            ("ssh", True, f"{hosts} hosts x {per_host} ranks", lambda: ssh(hosts, per_host, idle_seconds, log, settle)),
            ("batch", False, f"{nodes} nodes x {per_node} ranks",
             lambda: batch(nodes, per_node, idle_seconds, log, settle))):
        if only not in (None, name):
            continue
        if needs_root and os.geteuid() != 0:
            out.append({"provider": name, "skipped": "needs root (pods and test hosts are network namespaces)"})
            continue
        log(f"{name} at scale: {what}")
        out.append(run_one())
    return out


if __name__ == "__main__":
    sys.exit(main())
