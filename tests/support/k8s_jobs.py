"""Workload-shaped pod sets on the test apiserver (PyTorchJob, indexed Job), running real ranks."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support import ranks as rank_support
from tests.support.k8s_server import K8sServer

REPO = str(Path(__file__).resolve().parents[2])
ENV = {"PYTHONPATH": REPO}  # dbgfwd importable in the pods' processes and the CLI's
KF = "training.kubeflow.org/"

# A stand-in rank for scale tests: listens on base + local rank and writes a marker, no debugpy.
LIGHT_RANK = '''\
import os, socket, time
from dbgfwd.rank import markers
from dbgfwd.rank import env as rankenv
env = rankenv.detect_or_default()
port = int(os.environ.get("DBGFWD_BASE_PORT", "5678")) + env.local_rank
s = socket.socket(); s.bind(("127.0.0.1", port)); s.listen(8)
markers.write_marker(markers.new_marker(env.rank, env.local_rank, port, "127.0.0.1", env.world_size,
                                        env.source, []))
while True:
    c, _ = s.accept(); c.close()
'''

ECHO = '''\
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(262144)
        if not d:
            break
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
'''


def app_dir(srv: K8sServer) -> Path:
    """Where pod programs live: outside /tmp, which each pod replaces with its own."""
    path = srv.root / "app"
    path.mkdir(exist_ok=True)
    return path


def ranks_command(program: Path, ranks_per_pod: int, rank_launcher: bool = True, python_flags: str = "") -> list[str]:
    """Start `ranks_per_pod` ranks; the pod's RANK env (node rank, as the operators set it) picks
    global ranks node * ranks_per_pod + local rank, as torchrun would."""
    runner = f"{sys.executable} -m dbgfwd.rank --" if rank_launcher else f"{sys.executable} {python_flags}".strip()
    return ["sh", "-c", f'N=$RANK; i=0; while [ $i -lt {ranks_per_pod} ]; do '
                        f'RANK=$((N*{ranks_per_pod}+i)) LOCAL_RANK=$i {runner} {program} & i=$((i+1)); done; wait']


def pytorchjob_pod(srv: K8sServer, job: str, rtype: str, index: int, namespace: str, program: Path,
                   ranks_per_pod: int, workers: int, start: bool = True, rank_launcher: bool = True,
                   name: str | None = None, extra_env: dict | None = None, python_flags: str = ""):
    node_rank = index if rtype == "master" else index + 1
    labels = {KF + "job-name": job, KF + "replica-type": rtype, KF + "replica-index": str(index),
              KF + "operator-name": "pytorchjob-controller"}
    env = {"RANK": str(node_rank), "WORLD_SIZE": str(workers + 1), "MASTER_ADDR": f"{job}-master-0",
           "MASTER_PORT": "23456", "PYTHONPATH": REPO, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    return srv.add_pod(name or f"{job}-{rtype}-{index}", namespace, labels=labels, env=env,
                       command=ranks_command(program, ranks_per_pod, rank_launcher, python_flags),
                       working_dir=str(program.parent), owner=("PyTorchJob", job), start=start)


def pytorchjob(srv: K8sServer, job: str, namespace: str, workers: int = 2, ranks_per_pod: int = 2,
               program: Path | None = None) -> Path:
    """master-0 + worker-0..N-1, each running `ranks_per_pod` debugpy ranks. Returns the program."""
    program = program or rank_support.write_program(app_dir(srv))
    pytorchjob_pod(srv, job, "master", 0, namespace, program, ranks_per_pod, workers)
    for i in range(workers):
        pytorchjob_pod(srv, job, "worker", i, namespace, program, ranks_per_pod, workers)
    return program


def echo_pod(srv: K8sServer, name: str, namespace: str = "default", port: int = 7000):
    script = app_dir(srv) / "echo.py"
    script.write_text(ECHO)
    return srv.add_pod(name, namespace, labels={"app": "echo"}, env={"PYTHONPATH": REPO},
                       command=[sys.executable, str(script), str(port)], working_dir=str(script.parent))


def rank_markers(pod) -> int:
    """How many rank markers the pod's ranks have written (read from its /tmp, never from a port)."""
    return len(list(pod.runtime.tmp.glob("dbgfwd-*/rank-*.json")))


def wait_listening(pod, port: int, timeout: float = 30.0) -> None:
    """Wait until something listens on `port` in the pod, read from its /proc/net/tcp (out of band)."""
    import time

    from dbgfwd.rank.markers import parse_proc_net_tcp

    deadline = time.monotonic() + timeout
    while True:
        proc = pod.runtime.exec(["cat", "/proc/net/tcp"])
        out, _ = proc.communicate(timeout=10)
        if any(p == port for _, p in parse_proc_net_tcp(out.decode())):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on {port} in pod {pod.name}: {pod.runtime.log_text()[-1000:]}")
        time.sleep(0.1)


def attach(srv: K8sServer, ws: Path, tmp_path: Path, *args: str):
    """`dbgfwd attach ARGS` against `srv` (its kubeconfig_path), in workspace `ws`, logged under tmp_path."""
    from tests.support import cli

    return cli.Background("attach", *args, "--kubeconfig", str(srv.kubeconfig_path), "--workspace", str(ws),
                          log=tmp_path / "attach.log", env=ENV)
