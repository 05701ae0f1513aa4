"""Forward paths the benchmark measures, as a small registry of plugins.

A path turns the upstream ranks of the run (rank -> port on 127.0.0.1, with markers in
`env.runtime_dir`) into local endpoints (rank -> (host, port)) a client connects to. Baselines
(direct, socat, ssh -L) are measured in the same run so every dbgfwd figure has a ratio.

Adding a path: subclass
`BenchPath`, return a reason from `unavailable()` while it cannot run here, yield the endpoints
from `open()`, and append an instance to PATHS (or call `register`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
Endpoints = dict  # rank -> (host, port)


@dataclass
class BenchEnv:
    workdir: Path
    runtime_dir: Path  # markers of the upstream ranks (what the local provider reads)
    base_port: int  # --base-port for dbgfwd (the debugpy rank listens there)
    ranks: dict  # rank -> upstream port on 127.0.0.1 (of the machine the ranks run on)
    prefix: tuple = ()  # argv prefix running forwarders where the client is (nsenter into the lab client)
    ssh_config: Path | None = None  # for ssh paths: Host "h1" is where the ranks run
    host: str = "h1"  # ssh: the Host; k8s-pod world: the pod the ranks run in
    kubeconfig: Path | None = None  # k8s-pod world: the test apiserver's kubeconfig
    namespace: str = ""  # k8s-pod world: the pod's namespace

    def enter(self):
        """Context in which the measuring client's sockets are made (the lab client's namespace)."""
        return contextlib.nullcontext()


class BenchPath:
    name: str = ""
    world: str = "local"  # "local": ranks on this machine; "ssh-lab": ranks on a test host behind sshd
    baseline_of: str | None = None  # the path this one is the reference for ("ssh -L" for "dbgfwd ssh")
    is_dbgfwd = False

    def unavailable(self) -> str | None:
        """Why this path cannot run here (printed), or None."""
        return None

    @contextlib.contextmanager
    def open(self, env: BenchEnv) -> Iterator[Endpoints]:
        raise NotImplementedError
        yield {}


def dbgfwd_env() -> dict:
    """Environment running the dbgfwd of this checkout (not whatever is installed), byte-compiled as an
    installed package is: PYTHONDONTWRITEBYTECODE (set on some CI and sandbox machines) would have every dbgfwd
    process compile its modules from source, which no installed dbgfwd does."""
    env = dict(os.environ, NO_COLOR="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Direct(BenchPath):
    name = "direct"

    @contextlib.contextmanager
    def open(self, env):
        yield {r: ("127.0.0.1", p) for r, p in env.ranks.items()}


class Socat(BenchPath):
    name = "socat"

    def unavailable(self):
        return None if shutil.which("socat") else "socat not installed (apt-get install socat)"

    @contextlib.contextmanager
    def open(self, env):
        procs, out = [], {}
        try:
            for r, port in env.ranks.items():
                local = free_port()
                procs.append(subprocess.Popen(
                    ["socat", f"TCP-LISTEN:{local},bind=127.0.0.1,reuseaddr,fork,nodelay",
                     f"TCP:127.0.0.1:{port},nodelay"], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                out[r] = ("127.0.0.1", local)
            wait_listening([p for _, p in out.values()])
            yield out
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(10)


class DbgfwdAttach:
    """A running `dbgfwd attach` subprocess; endpoints read from its session.json."""

    def __init__(self, args: list[str], workspace: Path, log: Path, prefix: tuple = (),
                 extra_env: dict | None = None):
        self.workspace = workspace
        self.log = log
        self._fh = open(log, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "dbgfwd", "attach", "--workspace", str(workspace),
                                      *args],
                                     stdout=self._fh, stderr=subprocess.STDOUT,
                                     env={**dbgfwd_env(), **(extra_env or {})}, cwd=ROOT,
                                     start_new_session=True)

    def session(self) -> dict | None:
        try:
            return json.loads((self.workspace / ".dbgfwd" / "session.json").read_text())
        except (OSError, ValueError):
            return None

    def wait_ready(self, count: int, timeout: float = 120.0, poll: float = 0.005) -> float:
        """Seconds from start until `count` ranks are ready in session.json."""
        deadline = time.monotonic() + timeout
        launch = self.workspace / ".vscode" / "launch.json"
        self.launch_json_s = None  # seconds from start until launch.json first appeared (every rank planned)
        while time.monotonic() < deadline:
            if self.launch_json_s is None and launch.exists():
                self.launch_json_s = time.monotonic() - self.started
            s = self.session()
            if s is not None:
                ready = [r for r in s.get("ranks", []) if r.get("state") in ("ready", "connected")]
                if len(ready) >= count:
                    return time.monotonic() - self.started
            if self.proc.poll() is not None:
                break
            time.sleep(poll)
        raise RuntimeError(f"dbgfwd attach: {count} ranks not ready in {timeout}s:\n"
                           f"{self.log.read_text(errors='replace')[-2000:]}")

    def endpoints(self) -> Endpoints:
        s = self.session() or {}
        return {int(r["rank"]): ("127.0.0.1", int(r["local_port"])) for r in s.get("ranks", [])}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._fh.close()


class DbgfwdLocal(BenchPath):
    name = "dbgfwd local"
    baseline_of = None
    is_dbgfwd = True

    @contextlib.contextmanager
    def open(self, env):
        ws = env.workdir / "ws-local"
        ws.mkdir(exist_ok=True)
        yield from _attach_endpoints(["--provider", "local", "--runtime-dir", str(env.runtime_dir), "--base-port",
                                      str(env.base_port), "--no-launch-json"], ws, env.workdir / "attach-local.log",
                                     env.ranks)


def _attach_endpoints(args, ws, log, ranks, prefix=(), extra_env=None):
    """Run `dbgfwd attach ARGS` until its ranks are ready; yield rank -> local endpoint; stop it."""
    attach = DbgfwdAttach(args, ws, log, prefix=prefix, extra_env=extra_env)
    try:
        attach.wait_ready(len(ranks))
        eps = attach.endpoints()
        yield {r: eps[r] for r in ranks}
    finally:
        attach.stop()


def _support(module: str) -> bool:
    return importlib.util.find_spec(f"tests.support.{module}") is not None


def _provider(name: str) -> bool:
    from dbgfwd.providers import REGISTRY

    return name in REGISTRY


def _ssh_unavailable() -> str | None:
    if not _support("netns") or not _support("sshd"):
        return "tests/support/{netns,sshd}.py not on this branch yet (lands with issue 4: git merge main)"
    from tests.support.netns import Lab

    return Lab.supported()


class SshL(BenchPath):
    name = "ssh -L"
    world = "ssh-lab"

    def unavailable(self):
        return _ssh_unavailable()

    @contextlib.contextmanager
    def open(self, env):
        out, args = {}, []
        for r, port in env.ranks.items():
            local = free_port()
            out[r] = ("127.0.0.1", local)
            args += ["-L", f"127.0.0.1:{local}:127.0.0.1:{port}"]
        proc = subprocess.Popen([*env.prefix, "ssh", "-F", str(env.ssh_config), "-N", "-o", "ExitOnForwardFailure=yes",
                                 *args, env.host], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_listening([p for _, p in out.values()], proc=proc, netns_pid=proc.pid)
            yield out
        finally:
            proc.terminate()
            proc.wait(10)


class DbgfwdSsh(BenchPath):
    name = "dbgfwd ssh"
    world = "ssh-lab"
    is_dbgfwd = True

    def unavailable(self):
        reason = _ssh_unavailable()
        if reason:
            return reason
        if not _provider("ssh"):
            return "the ssh provider is not registered on this branch yet (issue 4: git merge main)"
        return None

    @contextlib.contextmanager
    def open(self, env):
        ws = env.workdir / "ws-ssh"
        ws.mkdir(exist_ok=True)
        # Markers are read on the host through ssh exec; streams are direct-tcpip channels.
        yield from _attach_endpoints(["--provider", "ssh", "--ssh-config", str(env.ssh_config), "--base-port",
                                      str(env.base_port), "--no-launch-json", env.host], ws,
                                     env.workdir / "attach-ssh.log", env.ranks, prefix=env.prefix)


class DbgfwdSshOpenssh(DbgfwdSsh):
    """The same, through `--ssh-backend openssh`: the ssh client's ControlMaster, one `ssh -W` per stream."""

    name = "dbgfwd ssh openssh"

    @contextlib.contextmanager
    def open(self, env):
        ws = env.workdir / "ws-ssh-openssh"
        ws.mkdir(exist_ok=True)
        yield from _attach_endpoints(["--provider", "ssh", "--ssh-backend", "openssh", "--ssh-config",
                                      str(env.ssh_config), "--base-port", str(env.base_port), "--no-launch-json",
                                      env.host], ws, env.workdir / "attach-ssh-openssh.log", env.ranks,
                                     prefix=env.prefix)


class DbgfwdKubernetes(BenchPath):
    """`dbgfwd attach --provider kubernetes POD` against the test apiserver (tests/support/k8s_server.py).

    The ranks run inside the pod (a network namespace with its own /tmp), so this path has its own
    world: the same two upstreams started in the pod, port-forwarded through the apiserver's websocket."""

    name = "dbgfwd kubernetes"
    world = "k8s-pod"
    is_dbgfwd = True

    def unavailable(self):
        if not _support("k8s_server") or not _provider("kubernetes"):
            return "tests/support/k8s_server.py or the kubernetes provider is missing (git merge main)"
        from tests.support.k8s_pods import netns_available

        ok, why = netns_available()
        return None if ok else f"pods are network namespaces: {why}"

    @contextlib.contextmanager
    def open(self, env):
        ws = env.workdir / "ws-k8s"
        ws.mkdir(exist_ok=True)
        # Markers (ranks, ports) are read through exec in the pod; streams are portforward websockets.
        yield from _attach_endpoints(["--provider", "kubernetes", env.host, "-n", env.namespace, "--kubeconfig",
                                      str(env.kubeconfig), "--base-port", str(env.base_port), "--no-launch-json"],
                                     ws, env.workdir / "attach-k8s.log", env.ranks)


class DbgfwdBatch(BenchPath):
    """`dbgfwd attach --provider batch JOB` through the native SSM client, against moto (EC2/ECS), the
    strict fake Batch/SSM APIs and the test SSM agent (tests/support/batch_world.py). The agent dials
    the instance's loopback, where the run's ranks listen on base port + local rank."""

    name = "dbgfwd batch/ssm"
    is_dbgfwd = True

    def unavailable(self):
        if not _support("batch_world") or not _provider("batch"):
            return "tests/support/batch_world.py or the batch provider is missing (git merge main)"
        missing = [m for m in ("boto3", "moto") if importlib.util.find_spec(m) is None]
        return f"needs {' and '.join(missing)} (pip install boto3 'moto[server]')" if missing else None

    @contextlib.contextmanager
    def open(self, env):
        import logging

        from tests.support.batch_world import BatchWorld

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request lines would bury the progress
        if sorted(env.ranks.values()) != [env.base_port + r for r in sorted(env.ranks)]:
            raise RuntimeError(f"batch reaches ranks on base port + local rank; upstreams are {env.ranks}")
        ws = env.workdir / "ws-batch"
        ws.mkdir(exist_ok=True)
        with BatchWorld() as world:
            _, container_instance = world.instance()
            job = world.single_job(container_instance)
            yield from _attach_endpoints(["--provider", "batch", job, "--ranks-per-node", str(len(env.ranks)),
                                          "--base-port", str(env.base_port), "--no-launch-json"],
                                         ws, env.workdir / "attach-batch.log", env.ranks, extra_env=world.env())


def wait_listening(ports: list[int], timeout: float = 30.0, proc: subprocess.Popen | None = None,
                   netns_pid: int | str = "self") -> None:
    """Wait until every port has a LISTEN socket (read from /proc/<pid>/net/tcp: no connect)."""
    from dbgfwd.rank.markers import parse_proc_net_tcp

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = "".join(Path(f"/proc/{netns_pid}/net/{f}").read_text() for f in ("tcp", "tcp6"))
        listening = {p for _, p in parse_proc_net_tcp(text)}
        if set(ports) <= listening:
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"forwarder exited with {proc.returncode}")
        time.sleep(0.02)
    raise RuntimeError(f"ports {ports} not listening after {timeout}s")


PATHS: list[BenchPath] = [
    Direct(), Socat(), DbgfwdLocal(), SshL(), DbgfwdSsh(), DbgfwdSshOpenssh(),
    DbgfwdKubernetes(), DbgfwdBatch(),
]


def register(path: BenchPath) -> None:
    PATHS.append(path)


def slug(name: str) -> str:
    import re

    return re.sub(r"[^a-z0-9/]+", "-", name.lower()).strip("-")


def select(names: list[str] | None) -> list[BenchPath]:
    if not names:
        return list(PATHS)
    wanted = {slug(n) for n in names}
    chosen = [p for p in PATHS if slug(p.name) in wanted]
    unknown = wanted - {slug(p.name) for p in chosen}
    if unknown:
        raise SystemExit(f"bench: unknown path(s) {sorted(unknown)}; choose from: "
                         f"{', '.join(slug(p.name) for p in PATHS)}")
    return chosen
