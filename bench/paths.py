"""Forward paths the benchmark measures, as a small registry of plugins.

A path turns the upstream ranks of the run (rank -> port on 127.0.0.1, with markers in
`env.runtime_dir`) into local endpoints (rank -> (host, port)) a client connects to. Baselines
(direct, socat, ssh -L) are measured in the same run so every dbgfwd figure has a ratio.

Adding a path (e.g. the Kubernetes or SSM test servers when their branches land): subclass
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
    ranks: dict  # rank -> upstream port on 127.0.0.1


class BenchPath:
    name: str = ""
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
    """Environment running the dbgfwd of this checkout (not whatever is installed)."""
    env = dict(os.environ, NO_COLOR="1")
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
                     f"TCP:127.0.0.1:{port},nodelay"], stdin=subprocess.DEVNULL))
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

    def __init__(self, args: list[str], workspace: Path, log: Path):
        self.workspace = workspace
        self.log = log
        self._fh = open(log, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "dbgfwd", "attach", "--workspace", str(workspace), *args],
                                     stdout=self._fh, stderr=subprocess.STDOUT, env=dbgfwd_env(), cwd=ROOT,
                                     start_new_session=True)

    def session(self) -> dict | None:
        try:
            return json.loads((self.workspace / ".dbgfwd" / "session.json").read_text())
        except (OSError, ValueError):
            return None

    def wait_ready(self, count: int, timeout: float = 120.0, poll: float = 0.005) -> float:
        """Seconds from start until `count` ranks are ready in session.json."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
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
        attach = DbgfwdAttach(["--provider", "local", "--runtime-dir", str(env.runtime_dir),
                               "--base-port", str(env.base_port), "--no-launch-json"], ws, env.workdir / "attach-local.log")
        try:
            attach.wait_ready(len(env.ranks))
            eps = attach.endpoints()
            yield {r: eps[r] for r in env.ranks}
        finally:
            attach.stop()


def _support(module: str) -> bool:
    return importlib.util.find_spec(f"tests.support.{module}") is not None


def _provider(name: str) -> bool:
    from dbgfwd.providers import REGISTRY

    return name in REGISTRY


class _Sshd:
    """One loopback sshd (tests/support/sshd.py from issue 4) shared by the ssh paths of a run."""

    _instance = None

    @classmethod
    def get(cls, workdir: Path):
        if cls._instance is None:
            from tests.support import sshd

            keys = sshd.SshKeys.create(workdir / "sshkeys")
            server = sshd.Sshd(workdir / "sshd", keys, port=sshd.free_port()).start()
            known = workdir / "known_hosts"
            known.write_text(server.known_hosts_line("127.0.0.1") + "\n")
            cfg = workdir / "ssh_config"
            sshd.write_ssh_config(cfg, {"benchhost": {
                "HostName": "127.0.0.1", "Port": server.port, "IdentityFile": str(keys.client_key),
                "UserKnownHostsFile": str(known), "StrictHostKeyChecking": "yes", "IdentitiesOnly": "yes"}})
            cls._instance = (server, keys, cfg)
        return cls._instance

    @classmethod
    def close(cls):
        if cls._instance is not None:
            cls._instance[0].stop()
            cls._instance = None


def _ssh_unavailable() -> str | None:
    if not shutil.which("ssh") or not shutil.which("sshd") and not os.path.exists("/usr/sbin/sshd"):
        return "OpenSSH client/server not installed (apt-get install openssh-client openssh-server)"
    if not _support("sshd"):
        return "tests/support/sshd.py not on this branch yet (lands with issue 4: git merge main)"
    return None


class SshL(BenchPath):
    name = "ssh -L"

    def unavailable(self):
        return _ssh_unavailable()

    @contextlib.contextmanager
    def open(self, env):
        _, _, cfg = _Sshd.get(env.workdir)
        out, args = {}, []
        for r, port in env.ranks.items():
            local = free_port()
            out[r] = ("127.0.0.1", local)
            args += ["-L", f"127.0.0.1:{local}:127.0.0.1:{port}"]
        proc = subprocess.Popen(["ssh", "-F", str(cfg), "-N", "-o", "ExitOnForwardFailure=yes", *args, "benchhost"],
                                stdin=subprocess.DEVNULL)
        try:
            wait_listening([p for _, p in out.values()], proc=proc)
            yield out
        finally:
            proc.terminate()
            proc.wait(10)


class DbgfwdSsh(BenchPath):
    name = "dbgfwd ssh"
    baseline_of = "ssh -L"
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
        _, _, cfg = _Sshd.get(env.workdir)
        ws = env.workdir / "ws-ssh"
        ws.mkdir(exist_ok=True)
        # The ranks run on the ssh host (here: this machine); markers are read through ssh exec.
        attach = DbgfwdAttach(["--provider", "ssh", "--ssh-config", str(cfg), "--base-port", str(env.base_port),
                               "--no-launch-json", "benchhost"], ws, env.workdir / "attach-ssh.log")
        try:
            attach.wait_ready(len(env.ranks))
            eps = attach.endpoints()
            yield {r: eps[r] for r in env.ranks}
        finally:
            attach.stop()


class Pending(BenchPath):
    """A path whose test server lands on another branch: listed, skipped with the reason."""

    def __init__(self, name: str, support: str, provider: str, issue: int):
        self.name, self._support, self._provider, self._issue = name, support, provider, issue

    def unavailable(self):
        if not _support(self._support) or not _provider(self._provider):
            return (f"tests/support/{self._support}.py and the {self._provider} provider are not on this branch "
                    f"yet (issue {self._issue}: git merge main)")
        return "test server present but its bench path is not wired yet (add a BenchPath in bench/paths.py)"


def wait_listening(ports: list[int], timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until every port has a LISTEN socket (read from /proc/net/tcp: no connect)."""
    from dbgfwd.markers import local_probe

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listening = {p for _, p in local_probe(Path("/nonexistent")).listening}
        if set(ports) <= listening:
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"forwarder exited with {proc.returncode}")
        time.sleep(0.02)
    raise RuntimeError(f"ports {ports} not listening after {timeout}s")


PATHS: list[BenchPath] = [
    Direct(), Socat(), DbgfwdLocal(), SshL(), DbgfwdSsh(),
    Pending("dbgfwd kubernetes", "k8s_server", "kubernetes", 5),
    Pending("dbgfwd batch/ssm", "ssm_agent", "batch", 6),
]


def register(path: BenchPath) -> None:
    PATHS.append(path)


def select(names: list[str] | None) -> list[BenchPath]:
    if not names:
        return list(PATHS)
    wanted = {n.strip().lower() for n in names}
    chosen = [p for p in PATHS if p.name.lower() in wanted or p.name.lower().replace(" ", "-") in wanted]
    unknown = wanted - {p.name.lower() for p in chosen} - {p.name.lower().replace(" ", "-") for p in chosen}
    if unknown:
        raise SystemExit(f"bench: unknown path(s) {sorted(unknown)}; choose from: "
                         f"{', '.join(p.name.replace(' ', '-') for p in PATHS)}")
    return chosen
