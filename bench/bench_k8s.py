"""Kubernetes forwarding benchmark against the test apiserver (root: pods are network namespaces).

    python bench/bench_k8s.py [--pods 64] [--rtt 2000] [--mb 64]

In one run, on one echo pod:
  * direct      : a socket made inside the pod's network namespace (the floor: no forwarding)
  * naive       : the official client's `kubernetes.stream.portforward` bridged to a local socket
                  with two threads per connection (what users write by hand)
  * dbgfwd      : dbgfwd's engine + KubernetesProvider (its own v4 websocket stream)
small-message round trip (64 bytes, median and p99) and bulk echo throughput; then attach-to-ready:
`dbgfwd attach` + `dbgfwd wait` for N single-rank pods, from process start to all ranks ready.
Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import cli, k8s_jobs  # noqa: E402
from tests.support.k8s_server import K8sServer  # noqa: E402

NS = "bench"


def rtt(port: int, count: int) -> tuple[float, float]:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _rtt_on(s, count)


def _rtt_on(s, count: int) -> tuple[float, float]:
    msg = os.urandom(64)
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        s.sendall(msg)
        got = b""
        while len(got) < 64:
            got += s.recv(64 - len(got))
        times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times) * 1e6, times[int(len(times) * 0.99)] * 1e6


def throughput(port: int, megabytes: int, duplex: bool) -> float:
    with socket.create_connection(("127.0.0.1", port)) as s:
        return _throughput_on(s, megabytes, duplex)


def _throughput_on(s, megabytes: int, duplex: bool) -> float:
    """MB/s echoed. duplex: one thread sends everything while the caller reads (full duplex);
    else lock-step 1 MB blocks (send one, read it back), which no forwarder can deadlock on."""
    s.settimeout(60)
    block = os.urandom(1024 * 1024 if not duplex else 256 * 1024)
    total = megabytes * 1024 * 1024
    t0 = time.perf_counter()
    if not duplex:
        for _ in range(total // len(block)):
            s.sendall(block)
            got = 0
            while got < len(block):
                try:
                    chunk = s.recv(len(block) - got)
                except socket.timeout:
                    return float("nan")
                if not chunk:
                    raise RuntimeError("stream ended")
                got += len(chunk)
        return total / (time.perf_counter() - t0) / 1e6

    def send():
        sent = 0
        while sent < total:
            s.sendall(block)
            sent += len(block)

    threading.Thread(target=send, daemon=True).start()
    got = 0
    while got < total:
        try:
            chunk = s.recv(1 << 20)
        except socket.timeout:
            print(f"  stalled after {got / 1e6:.1f} MB of {total / 1e6:.0f} MB", flush=True)
            return float("nan")
        if not chunk:
            raise RuntimeError(f"stream ended after {got} bytes")
        got += len(chunk)
    return total / (time.perf_counter() - t0) / 1e6


class NaiveBridge:
    """The hand-written approach: a local listener, one official-client portforward per connection."""

    def __init__(self, srv: K8sServer, pod: str, port: int):
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(srv.kubeconfig_path), client_configuration=cfg)
        self.api = client.CoreV1Api(client.ApiClient(cfg))
        self.pod, self.remote = pod, port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        from kubernetes.stream import portforward

        while True:
            conn, _ = self.listener.accept()
            pf = portforward(self.api.connect_get_namespaced_pod_portforward, self.pod, NS, ports=str(self.remote))
            upstream = pf.socket(self.remote)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(262144)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass


def socketpair_provider():
    """The design dbgfwd did not take: hand the engine a socketpair end and pump the other end."""
    from dbgfwd.providers.kubernetes import KubernetesProvider

    class SocketpairProvider(KubernetesProvider):
        def open_stream(self, target, port, timeout):
            stream = super().open_stream(target, port, timeout)
            ours, theirs = socket.socketpair()
            for src, dst in ((ours, stream), (stream, ours)):
                threading.Thread(target=NaiveBridge._pump, args=(src, dst), daemon=True).start()
            return theirs
    return SocketpairProvider


def start_engine(srv: K8sServer, cls):
    from dbgfwd.engine import Engine, PlanSettings
    from dbgfwd.providers.base import ProviderConfig

    provider = cls(ProviderConfig(targets=("echo-0",), options={
        "kubeconfig": str(srv.kubeconfig_path), "namespace": NS, "ranks_per_pod": 1}, base_port=7000))
    local = cli_free_port()
    engine = Engine(provider, PlanSettings(base_port=7000, local_base_port=local, ranks_per_node=1))
    engine.start()
    return engine, local


def forwarding(srv: K8sServer, count: int, megabytes: int) -> None:
    from dbgfwd.providers.kubernetes import KubernetesProvider

    pod = k8s_jobs.echo_pod(srv, "echo-0", NS)
    k8s_jobs.wait_listening(pod, 7000)
    engine, local = start_engine(srv, KubernetesProvider)
    engine2, local2 = start_engine(srv, socketpair_provider())
    naive = NaiveBridge(srv, "echo-0", 7000)

    def direct_rtt():
        s = pod.runtime.dial(7000)
        try:
            return _rtt_on(s, count)
        finally:
            s.close()

    def direct_tp(duplex):
        s = pod.runtime.dial(7000)
        try:
            return _throughput_on(s, megabytes, duplex)
        finally:
            s.close()

    results = {}
    try:
        for name, r, t in (("direct (in-pod socket)", direct_rtt, direct_tp),
                           ("naive (official client bridged)", lambda: rtt(naive.port, count),
                            lambda d: throughput(naive.port, megabytes, d)),
                           ("dbgfwd via socketpair + pumps", lambda: rtt(local2, count),
                            lambda d: throughput(local2, megabytes, d)),
                           ("dbgfwd", lambda: rtt(local, count), lambda d: throughput(local, megabytes, d))):
            med, p99 = r()
            results[name] = (med, p99, t(False), t(True))
    finally:
        engine.stop()
        engine2.stop()
    print(f"\nround trip of 64 bytes x {count}; echo of {megabytes} MB in lock-step 1 MB blocks and full duplex "
          "(nan = stalled for 60 s)")
    print(f"{'path':34} {'median us':>10} {'p99 us':>10} {'MB/s 1MB':>9} {'MB/s dup':>9}")
    for name, (med, p99, tp, dup) in results.items():
        print(f"{name:34} {med:10.0f} {p99:10.0f} {tp:9.1f} {dup:9.1f}")
    n = results["naive (official client bridged)"]
    d = results["dbgfwd"]
    print(f"dbgfwd vs naive: round trip {n[0] / d[0]:.2f}x faster, lock-step throughput {d[2] / n[2]:.2f}x")


def cli_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def attach_to_ready(srv: K8sServer, pods: int) -> None:
    program = k8s_jobs.app_dir(srv) / "light_rank.py"
    program.write_text(k8s_jobs.LIGHT_RANK)
    t0 = time.perf_counter()
    started = []
    for i in range(pods):
        started.append(srv.add_pod(f"train-{i}-x{i:03d}", NS, labels={"batch.kubernetes.io/job-name": "train"},
                                   annotations={"batch.kubernetes.io/job-completion-index": str(i)},
                                   env={"PYTHONPATH": k8s_jobs.REPO, "JOB_COMPLETION_INDEX": str(i)},
                                   command=[sys.executable, str(program)], working_dir=str(program.parent)))
    for pod in started:  # out of band: the marker file inside the pod's /tmp
        deadline = time.monotonic() + 120
        while not k8s_jobs.rank_markers(pod):
            if time.monotonic() > deadline:
                raise RuntimeError(f"pod {pod.name} never wrote a marker: {pod.runtime.log_text()[-500:]}")
            time.sleep(0.05)
    print(f"\n{pods} pods started in {time.perf_counter() - t0:.1f}s (not part of the figure)")
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        env = {"PYTHONPATH": str(ROOT)}
        t1 = time.perf_counter()
        bg = cli.Background("attach", "job/train", "-n", NS, "--kubeconfig", str(srv.kubeconfig_path),
                            "--workspace", str(ws), "--no-launch-json",
                            log=ws / "attach.log", env=env)
        try:
            cli.wait_ready(ws, 300, bg=bg)
            elapsed = time.perf_counter() - t1
            ranks = len(cli.session(ws)["ranks"])
        finally:
            bg.stop()
    print(f"attach-to-ready for {pods} pods ({ranks} ranks): {elapsed:.2f}s "
          f"(dbgfwd attach start -> `dbgfwd wait` exits 0, ranks from markers read through exec)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=64)
    ap.add_argument("--rtt", type=int, default=2000)
    ap.add_argument("--mb", type=int, default=64)
    args = ap.parse_args()
    with K8sServer() as srv:
        srv.kubeconfig_path = srv.kubeconfig(srv.root / "kubeconfig")
        forwarding(srv, args.rtt, args.mb)
        attach_to_ready(srv, args.pods)


if __name__ == "__main__":
    main()
