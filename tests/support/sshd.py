"""Real OpenSSH sshd processes for tests: temp host key, authorized client key, unprivileged port.

    keys = SshKeys.create(workdir)                # client + host ed25519 keys (ssh-keygen)
    sshd = Sshd(workdir / "h1", keys, port=free_port()).start()
    known_hosts line: sshd.known_hosts_line("127.0.0.1")
    write_ssh_config(path, {"h1": {"HostName": "127.0.0.1", "Port": sshd.port, ...}})

`Sshd.start(prefix=[...])` runs it under a prefix (nsenter into a test host's namespaces, see
tests/support/netns.py). Works as root and as an ordinary user (then only that user can log in).
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def have_sshd() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None


def openssh_version() -> tuple[int, int]:
    out = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)


@dataclass(frozen=True)
class SshKeys:
    client_key: Path  # private key the tests log in with
    host_key: Path  # private host key every test sshd serves

    @classmethod
    def create(cls, directory: Path) -> "SshKeys":
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        client, host = directory / "id_client", directory / "ssh_host_ed25519_key"
        if not client.exists():
            _keygen(client, "dbgfwd-test-client")
        if not host.exists():
            _keygen(host, "dbgfwd-test-host")
        return cls(client, host)

    @property
    def client_pub(self) -> str:
        return Path(f"{self.client_key}.pub").read_text().strip()

    @property
    def host_pub(self) -> str:
        return " ".join(Path(f"{self.host_key}.pub").read_text().split()[:2])

    def other_client_key(self) -> Path:
        """A key sshd does NOT accept (for authentication-failure tests)."""
        path = self.client_key.parent / "id_stranger"
        if not path.exists():
            _keygen(path, "dbgfwd-test-stranger")
        return path


class Sshd:
    """One sshd (-D -e) with its own config dir. Configs live in `directory`, which must stay visible
    to the process (never under a tmpfs the host hides)."""

    def __init__(self, directory: Path, keys: SshKeys, port: int, listen: str = "127.0.0.1",
                 extra: Mapping[str, str] | None = None):
        self.directory = Path(directory)
        self.keys, self.port, self.listen = keys, port, listen
        self.extra = dict(extra or {})
        self.proc: subprocess.Popen | None = None
        self.log_path = self.directory / "sshd.log"
        self.config_path = self.directory / "sshd_config"

    def write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        authorized = self.directory / "authorized_keys"
        authorized.write_text(self.keys.client_pub + "\n")
        os.chmod(authorized, 0o600)
        options = {
            "Port": str(self.port), "ListenAddress": self.listen, "HostKey": str(self.keys.host_key),
            "AuthorizedKeysFile": str(authorized), "PidFile": "none", "UsePAM": "no", "StrictModes": "no",
            "PermitRootLogin": "prohibit-password", "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no", "AllowTcpForwarding": "yes", "MaxSessions": "200",
            "MaxStartups": "200", "LogLevel": "INFO", "AllowUsers": getpass.getuser(),
        }
        if openssh_version() >= (9, 8):
            options["PerSourcePenalties"] = "no"  # auth-failure tests would lock the client out
        options.update(self.extra)
        self.config_path.write_text("".join(f"{k} {v}\n" for k, v in options.items()))
        return self.config_path

    def start(self, prefix: Sequence[str] = (), timeout: float = 10.0) -> "Sshd":
        self.write_config()
        self.log_path.write_text("")
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen([*prefix, SSHD, "-D", "-e", "-f", str(self.config_path)],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text()
            if "Server listening" in text:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited ({self.proc.returncode}): {text.strip()}")
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"sshd did not start in {timeout}s: {self.log_path.read_text().strip()}")

    def stop(self) -> None:
        """Stop the listener (sessions it already forked are left alone: see netns.Host.kill_sshd)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def known_hosts_line(self, host: str) -> str:
        name = host if self.port == 22 else f"[{host}]:{self.port}"
        return f"{name} {self.keys.host_pub}"


def write_ssh_config(path: Path, hosts: Mapping[str, Mapping[str, object]]) -> Path:
    """An ssh_config with one `Host` block per alias (values written as given)."""
    lines = []
    for alias, options in hosts.items():
        lines.append(f"Host {alias}")
        lines += [f"    {k} {v}" for k, v in options.items()]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)
