"""The "kubelet" half of the test apiserver: each pod is a network namespace on this machine.

A pod's container runs under `ip netns exec` (own loopback, so every pod's ranks listen on
127.0.0.1:5678) with a private /tmp bind-mounted from the pod's directory (so rank markers are per
pod, as in real containers). Port-forward dials come from a thread that entered the pod's network
namespace with setns(2): the socket it makes stays there. Exec runs a process the same way.
Needs root (CI runs as root).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

from tests.support.netns import keep_visible

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count()
# `ip netns exec` gives a new mount namespace (slave of /): bind the pod's tmp over /tmp in it.
_ENTER = keep_visible('mount --bind "$0" /tmp') + ' && cd "$1" && shift && exec "$@"'


def netns_available() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "needs root for ip netns (CI runs as root)"
    if not shutil.which("ip"):
        return False, "needs iproute2 (`ip netns`)"
    return True, ""


class PodRuntime:
    def __init__(self, root: Path, name: str, env: dict[str, str], command: list[str], working_dir: str):
        self.name = name
        self.netns = f"dbgk8s-{os.getpid()}-{next(_counter)}"
        self.dir = Path(root) / "pods" / f"{name}-{self.netns}"
        self.tmp = self.dir / "tmp"
        self.env = env
        self.command = command
        self.working_dir = working_dir or "/"
        self.proc: subprocess.Popen | None = None
        self._log = self.dir / "container.log"

    def start(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        os.chmod(self.tmp, 0o1777)
        subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True, capture_output=True)
        if self.command:
            with open(self._log, "wb") as fh:
                self.proc = subprocess.Popen(self._wrap(self.command), env=self._environ(), stdout=fh,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True)

    def _wrap(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, "sh", "-c", _ENTER, str(self.tmp), self.working_dir, *argv]

    def prefix(self) -> list[str]:
        """argv prefix running a command inside the pod (its network namespace, /tmp and workingDir)."""
        return self._wrap([])

    def _environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
        env.update(self.env)
        return env

    def log_text(self) -> str:
        try:
            return self._log.read_text(errors="replace")
        except OSError:
            return ""

    def dial(self, port: int, timeout: float = 5.0) -> socket.socket:
        """Connect to 127.0.0.1:port inside the pod (raises OSError, e.g. ConnectionRefusedError)."""
        result: dict = {}

        def run():
            fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    result["err"] = OSError(ctypes.get_errno(), "setns failed")
                    return
            finally:
                os.close(fd)
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                result["sock"] = sock
            except OSError as exc:
                result["err"] = exc

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(timeout + 1)
        if "sock" in result:
            return result["sock"]
        raise result.get("err") or TimeoutError(f"dial {port} timed out")

    def exec(self, argv: list[str], stdin: bool = False) -> subprocess.Popen:
        return subprocess.Popen(self._wrap(argv), env=self._environ(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE,
                                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        pids = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True).stdout
        for pid in pids.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
