"""Several SSH hosts on one machine: network namespaces joined by veth pairs, each host with its own
loopback (so every host's ranks can use 127.0.0.1:5678) and its own private /tmp and /run.

    with Lab(keys) as lab:                       # needs root + `ip netns`; see Lab.supported()
        client = lab.client                      # where dbgfwd runs; reaches hosts directly linked to it
        h1, h2 = lab.add_host("h1"), lab.add_host("h2")
        jump = lab.add_host("jump")
        hidden = lab.add_host("hidden", via=jump)  # reachable only from `jump` (ProxyJump)
        lab.write_ssh_config(path)               # Host h1/h2/jump/hidden with HostName, Port, key...
        h1.popen([...python...])                 # runs inside h1's network + mount namespaces
        with client.inside(): ...                # sockets made here (and threads started here) live
                                                 # in the client namespace
        h1.kill_sshd(); h1.start_sshd()          # fault injection; h1.cut() / h1.restore() for the link

Namespace names are unique per run (`dbgfwd-<pid>-<n>-<name>`); addresses come from 10.99.0.0/16
and exist only inside these namespaces. Everything is torn down on exit, also after failures.
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import itertools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from tests.support.sshd import Sshd, SshKeys, write_ssh_config

CLONE_NEWNET = 0x40000000
SSH_PORT = 2222  # unprivileged, the same inside every host
_counter = itertools.count(1)
_libc = ctypes.CDLL(None, use_errno=True)


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


_HIDDEN = ("/tmp", "/run")  # what test hosts and pods mount privately


def paths_to_keep() -> list[str]:
    """The checkout and the venv, when they live under a path test hosts hide (CI may clone to /tmp):
    ranks inside a host run this Python and import this checkout, so they must stay visible."""
    root = str(Path(__file__).resolve().parents[2])
    candidates = {root, os.path.realpath(sys.prefix)}
    return sorted(p for p in candidates if any(p == h or p.startswith(h + "/") for h in _HIDDEN))


def keep_visible(hide: str) -> str:
    """Shell that runs `hide` (mounts over /tmp and/or /run) and then binds `paths_to_keep()` back."""
    keep = paths_to_keep()
    if not keep:
        return hide
    before, after = [], []
    for i, path in enumerate(keep):
        slot = f"/var/tmp/.dbgfwd-keep-{os.getpid()}-{i}"
        before.append(f"mkdir -p {shlex.quote(slot)} && mount --bind {shlex.quote(path)} {shlex.quote(slot)}")
        after.append(f"mkdir -p {shlex.quote(path)} && mount --bind {shlex.quote(slot)} {shlex.quote(path)}")
    return " && ".join(before + [hide] + after)


class Node:
    """A network namespace with a process (`holder`) owning its private /tmp and /run mounts."""

    def __init__(self, lab: "Lab", name: str, private_mounts: bool = True):
        self.lab, self.name = lab, name
        self.private_mounts = private_mounts
        self.netns = f"{lab.prefix}-{name}"
        self.links: list[tuple[str, "Node"]] = []  # (our interface name, peer)
        _run("ip", "netns", "add", self.netns)
        _run("ip", "-n", self.netns, "link", "set", "lo", "up")
        script = (keep_visible("mount -t tmpfs -o mode=1777 tmpfs /tmp && mount -t tmpfs -o mode=755 tmpfs /run")
                  + " && mkdir -m 755 /run/sshd && echo ready && exec sleep infinity") if private_mounts else \
            "echo ready && exec sleep infinity"
        self.holder = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "-m", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.holder.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"namespace {self.netns}: could not set up mounts: {self.holder.stderr.read()}")

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    def prefix(self) -> list[str]:
        """argv prefix running a command inside this node (network + mount namespaces)."""
        mount = [f"--mount=/proc/{self.holder.pid}/ns/mnt"] if self.private_mounts else []
        return ["nsenter", f"--net={self.netns_path}", *mount, "--"]

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen([*self.prefix(), *argv], **kwargs)

    def run(self, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 60)
        return subprocess.run([*self.prefix(), *argv], **kwargs)

    def path(self, inside: str) -> Path:
        """A path as this node sees it (e.g. its private /tmp), readable from the test."""
        return Path(f"/proc/{self.holder.pid}/root") / inside.lstrip("/")

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """Run the block with this thread in the node's network namespace (threads started meanwhile
        stay there; sockets made meanwhile stay there)."""
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(self.netns_path, os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(original)
        finally:
            os.close(target)
            os.close(original)

    def pids(self) -> list[int]:
        """Processes in this node's network namespace (found by namespace inode)."""
        want = os.stat(self.netns_path).st_ino
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.stat(f"/proc/{entry}/ns/net").st_ino == want:
                        out.append(int(entry))
                except OSError:
                    continue
        return out

    def kill(self, comm: str | None = None, sig: int = signal.SIGKILL) -> int:
        """Signal processes in this node (only those named `comm`, when given). Returns how many."""
        n = 0
        for pid in self.pids():
            if pid == self.holder.pid:
                continue
            try:
                if comm is not None and Path(f"/proc/{pid}/comm").read_text().strip() != comm:
                    continue
                os.kill(pid, sig)
                n += 1
            except (OSError, ProcessLookupError):
                continue
        return n

    def cut(self) -> None:
        """Take this node's links down (silent loss: no RST, no FIN)."""
        for ifname, _peer in self.links:
            _run("ip", "-n", self.netns, "link", "set", ifname, "down")

    def restore(self) -> None:
        for ifname, _peer in self.links:
            _run("ip", "-n", self.netns, "link", "set", ifname, "up")

    def destroy(self) -> None:
        for _ in range(3):
            if not self.kill():
                break
            time.sleep(0.05)
        if self.holder.poll() is None:
            self.holder.kill()
        with contextlib.suppress(Exception):
            self.holder.wait(5)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)


class Host(Node):
    """A node running sshd on SSH_PORT of its link address; `address` is how its parent reaches it."""

    def __init__(self, lab: "Lab", name: str, parent: Node):
        super().__init__(lab, name)
        self.parent = parent
        self.address = lab.link(parent, self)
        self.sshd = Sshd(lab.directory / name, lab.keys, SSH_PORT, listen=self.address)

    def start_sshd(self) -> "Host":
        self.sshd.start(prefix=self.prefix())
        return self

    def kill_sshd(self) -> None:
        """Kill the listener AND every session process (what a host crash does to sshd)."""
        self.kill("sshd")
        if self.sshd.proc is not None:
            with contextlib.suppress(Exception):
                self.sshd.proc.wait(5)
        self.sshd.proc = None


class Lab:
    """A set of test hosts. Use as a context manager; `close()` removes everything it made."""

    def __init__(self, keys: SshKeys | None = None, directory: Path | None = None):
        self.prefix = f"dbgfwd-{os.getpid()}-{next(_counter)}"
        base = Path("/var/tmp") if Path("/var/tmp").is_dir() else Path.cwd()
        # Host configs must stay visible inside hosts, whose /tmp and /run are private tmpfs.
        self._own_dir = directory is None
        self.directory = Path(directory) if directory else Path(tempfile.mkdtemp(prefix=f"{self.prefix}-", dir=base))
        self.keys = keys or SshKeys.create(self.directory / "keys")
        self.nodes: list[Node] = []
        self.hosts: dict[str, Host] = {}
        self._links = itertools.count(1)
        # The client (where dbgfwd and the DAP clients run) shares this machine's files: only its
        # network is separate.
        self.client = self._add(Node(self, "client", private_mounts=False))

    @staticmethod
    def supported() -> str | None:
        """None when labs can run here, else why not (for a skip reason)."""
        if os.geteuid() != 0:
            return "network namespaces need root (CI runs as root)"
        for tool in ("ip", "nsenter", "unshare", "sshd", "ssh-keygen"):
            if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
                return f"{tool} is not installed"
        return None

    def _add(self, node: Node) -> Node:
        self.nodes.append(node)
        return node

    def link(self, a: Node, b: Node) -> str:
        """A veth pair between a and b on its own /24; returns b's address."""
        n = next(self._links)
        ifa, ifb = f"v{n}{b.name[:8]}", f"v{n}{a.name[:8]}"
        _run("ip", "-n", a.netns, "link", "add", ifa, "type", "veth", "peer", "name", ifb, "netns", b.netns)
        addr_a, addr_b = f"10.99.{n}.1", f"10.99.{n}.2"
        for node, ifname, addr in ((a, ifa, addr_a), (b, ifb, addr_b)):
            _run("ip", "-n", node.netns, "addr", "add", f"{addr}/24", "dev", ifname)
            _run("ip", "-n", node.netns, "link", "set", ifname, "up")
        a.links.append((ifa, b))
        b.links.append((ifb, a))
        return addr_b

    def add_host(self, name: str, via: Host | None = None, start: bool = True) -> Host:
        """A host with sshd; linked to the client, or only to `via` (then reach it with ProxyJump)."""
        host = self._add(Host(self, name, via or self.client))
        self.hosts[name] = host
        if start:
            host.start_sshd()
        return host

    def known_hosts(self) -> Path:
        path = self.directory / "known_hosts"
        path.write_text("".join(h.sshd.known_hosts_line(h.address) + "\n" for h in self.hosts.values()))
        return path

    def ssh_options(self, host: Host, **extra) -> dict:
        opts = {"HostName": host.address, "Port": SSH_PORT, "User": getpass.getuser(),
                "IdentityFile": self.keys.client_key, "IdentitiesOnly": "yes",
                "UserKnownHostsFile": self.known_hosts(), "GlobalKnownHostsFile": "/dev/null"}
        if host.parent is not self.client:
            opts["ProxyJump"] = host.parent.name
        opts.update(extra)
        return opts

    def write_ssh_config(self, path: Path | None = None, overrides: Mapping[str, Mapping] | None = None) -> Path:
        """ssh_config with one Host block per host (ProxyJump through parents that are not the client)."""
        overrides = overrides or {}
        entries = {name: self.ssh_options(host, **overrides.get(name, {})) for name, host in self.hosts.items()}
        return write_ssh_config(path or self.directory / "ssh_config", entries)

    def close(self) -> None:
        for node in reversed(self.nodes):
            with contextlib.suppress(Exception):
                node.destroy()
        self.nodes.clear()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def python_in(node: Node, code: str, env: Mapping[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """Start `python -c code` inside `node` with this checkout importable."""
    full_env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    full_env["PYTHONPATH"] = root + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.pop("DBGFWD_RUNTIME_DIR", None)
    full_env.update(env or {})
    return node.popen([sys.executable, "-c", code], env=full_env, **kwargs)
