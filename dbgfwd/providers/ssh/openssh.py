"""`--ssh-backend openssh`: the user's own `ssh` carries the forwards instead of paramiko.

For what only OpenSSH does: keyboard-interactive two-factor logins, GSSAPI/Kerberos, FIDO keys,
ProxyCommand, `Match exec`, a ControlMaster the user already opened. `ssh` reads the user's config as it
always does; dbgfwd adds options on the command line only (never edits a file).

Per host, one multiplexed control connection carries everything:
- the user's own master when one is already running for the host (`ssh -O check` answers), used and
  never stopped; otherwise a master of dbgfwd's own (`ssh -M -N`, control socket in a private 0700
  directory) with ServerAliveInterval from the config (dbgfwd's default when it sets none);
- one `ssh -W 127.0.0.1:PORT` mux client per debugger connection. Its stdin/stdout is one end of a
  socketpair, so the relay sees a real socket. The master answers a stdio forward only once the channel
  is open (or refused), and the client logs that answer at -v: that line is the open confirmation;
- exec channels (`ssh HOST -- COMMAND`) for probes and commands.

When the master dies (the keepalive gave up, the network went), every forward it carried ends and the
next use starts a new master, as the paramiko backend reconnects its transport.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from dbgfwd.errors import AuthError, BadFileError, DbgfwdError, ProviderUnavailable, UnreachableError, UpstreamError
from dbgfwd.net.poll import readable
from dbgfwd.providers.ssh.failures import upstream
from dbgfwd.providers.ssh.reconnect import EXEC_OUTPUT_LIMIT, Reconnecting
from dbgfwd.providers.ssh.settings import DEFAULT_ALIVE_COUNT, DEFAULT_ALIVE_INTERVAL, Defaults, host_label
from dbgfwd.providers.ssh.targets import HostSpec

log = logging.getLogger("dbgfwd.ssh")

_OPENED = "master session id:"  # the mux client's -v line once the master confirmed the stdio forward


def ssh_binary() -> str:
    """The user's `ssh`, or ProviderUnavailable saying how to get it."""
    if sys.platform == "win32":
        raise ProviderUnavailable("--ssh-backend openssh is not supported on Windows (its ssh has no "
                                  "ControlMaster)", hint="use the default --ssh-backend paramiko")
    path = shutil.which("ssh")
    if path is None:
        raise ProviderUnavailable("--ssh-backend openssh: no `ssh` on PATH",
                                  hint="install the OpenSSH client, or use the default --ssh-backend paramiko")
    return path


@dataclass(frozen=True)
class OpenSshSettings:
    """What dbgfwd needs to know of one host after `ssh -G` applied the user's config."""

    alias: str  # the host as the user typed it
    hostname: str
    port: int
    user: str
    connect_timeout: float
    alive_interval: float
    alive_count: int
    args: tuple[str, ...]  # options before the destination on every ssh command line (-F, -l, -p, -i, -o ...)
    set_alive: bool  # the config sets no ServerAliveInterval: dbgfwd's master passes its default

    @property
    def label(self) -> str:
        return host_label(self.alias, self.hostname, self.port)


def resolve(spec: HostSpec, defaults: Defaults, ssh: str, override_timeout: bool = False) -> OpenSshSettings:
    """Ask `ssh -G` what the user's config makes of `spec` (one process, no connection). dbgfwd's own options
    go on the command line; `defaults.connect_timeout` only when `override_timeout` (--ssh-timeout given)."""
    args: list[str] = []
    config_path = defaults.config_path
    if config_path:
        args += ["-F", config_path]
    login = spec.user or defaults.user
    if login:
        args += ["-l", login]
    if spec.port:
        args += ["-p", str(spec.port)]
    for key in defaults.identity_files:
        args += ["-i", key]
    if defaults.accept_new_host_keys:
        args += ["-o", "StrictHostKeyChecking=accept-new"]
    if override_timeout:
        args += ["-o", f"ConnectTimeout={max(1, round(defaults.connect_timeout))}"]
    try:
        res = subprocess.run([ssh, *args, "-G", spec.host], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProviderUnavailable(f"ssh -G {spec.host} failed ({exc})", hint="check your OpenSSH client") from None
    if res.returncode != 0:
        problem = _last_line(res.stderr) or f"exit status {res.returncode}"
        raise BadFileError(config_path or "~/.ssh/config", f"ssh cannot use the config for {spec.host}: {problem}",
                           hint=f"check it with `ssh -G {spec.host}`")
    conf: dict[str, str] = {}
    for line in res.stdout.splitlines():
        key, _, value = line.partition(" ")
        conf.setdefault(key.lower(), value.strip())
    interval = _number(conf.get("serveraliveinterval"), 0.0)
    timeout = _number(conf.get("connecttimeout"), 0.0)
    return OpenSshSettings(
        alias=spec.host, hostname=conf.get("hostname", spec.host), port=int(_number(conf.get("port"), 22)),
        user=conf.get("user", ""), connect_timeout=timeout or 10.0,
        alive_interval=interval or DEFAULT_ALIVE_INTERVAL,
        alive_count=int(_number(conf.get("serveralivecountmax"), DEFAULT_ALIVE_COUNT)) if interval else
        DEFAULT_ALIVE_COUNT,
        args=tuple(args), set_alive=not interval)


def _number(text: str | None, default: float) -> float:
    try:
        return float(text) if text not in (None, "", "none") else default
    except ValueError:
        return default


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("debug")]
    return lines[-1] if lines else ""


def classify(stderr: str, settings: OpenSshSettings) -> DbgfwdError:
    """What ssh printed when it could not connect, as one of dbgfwd's errors."""
    text = stderr.lower()
    line = _last_line(stderr) or "ssh exited"
    where = settings.label
    if "host identification has changed" in text or "host key verification failed" in text:
        return AuthError(f"ssh: host key of {where} could not be verified ({line})",
                         hint=f"check the host key with `ssh {settings.alias}` once in a terminal")
    if "permission denied" in text or "too many authentication failures" in text:
        return AuthError(f"ssh: authentication to {where} failed ({line})",
                         hint=f"check that `ssh {settings.alias}` logs in; for a two-factor login, open a "
                              "ControlMaster yourself first (dbgfwd uses it)")
    if "bad configuration option" in text or "terminating," in text:
        return BadFileError("ssh config", line, hint=f"check it with `ssh -G {settings.alias}`")
    return UnreachableError(f"ssh: cannot reach {where}: {line}",
                            hint="check the host, its port and the network; dbgfwd keeps trying")


class OpenSshConnection(Reconnecting):
    """One host reached through `ssh` multiplexing. Same interface as connection.HostConnection."""

    def __init__(self, key: str, settings: OpenSshSettings, control_dir: str, index: int, ssh: str,
                 interactive: bool = False, warn: Callable[[str], None] | None = None):
        super().__init__()
        self.key = key
        self.settings = settings
        self._ssh = ssh
        self._warn = warn or log.warning
        self._own_path = os.path.join(control_dir, f"h{index}")
        self._interactive = interactive  # the first connect may ask for a password / code on the terminal
        self._master: subprocess.Popen | None = None
        self._master_err: deque[str] = deque(maxlen=50)
        self._users_master = False  # the user's own ControlMaster carries us (we never stop it)
        self._alive = False
        self._clients: set[subprocess.Popen] = set()

    # ---- the control connection ----

    def _base(self, *extra: str) -> list[str]:
        # BatchMode: should the master be gone, ssh logs in on its own; it must never wait for a password then.
        mux = ["-o", "ControlMaster=no", "-o", "BatchMode=yes"]
        if self._users_master:
            return [self._ssh, *self.settings.args, *mux, *extra]
        return [self._ssh, *self.settings.args, "-S", self._own_path, *mux, *extra]

    @property
    def connected(self) -> bool:
        if not self._alive:
            return False
        m = self._master
        return self._users_master or (m is not None and m.poll() is None)

    def transport(self, timeout: float | None = None) -> None:
        """Make sure a control connection is up (starting dbgfwd's master if needed). Raises DbgfwdError."""
        self._ensure(timeout, lambda: True if self.connected else None, self._start)

    def _start(self, timeout: float) -> None:
        self._stop_master()
        if self.connects == 0 and self._check(users=True):
            self._users_master, self._alive = True, True
            log.info("ssh: using your ControlMaster for %s", self.settings.alias)
            return
        self._users_master = False
        with_tty = self._interactive and self.connects == 0 and self.failures == 0
        args = [self._ssh, *self.settings.args, "-M", "-S", self._own_path, "-N", "-o", "ControlPersist=no",
                "-o", "ExitOnForwardFailure=yes"]
        if self.settings.set_alive:
            args += ["-o", f"ServerAliveInterval={self.settings.alive_interval:g}",
                     "-o", f"ServerAliveCountMax={self.settings.alive_count}"]
        if not with_tty:
            args += ["-o", "BatchMode=yes"]
        args.append(self.settings.alias)
        with contextlib.suppress(OSError):
            os.unlink(self._own_path)
        self._master_err.clear()
        # In dbgfwd's own process group: a Ctrl-C or a closed terminal that ends dbgfwd ends its ssh too,
        # even when dbgfwd gets no chance to stop them.
        master = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        self._master = master
        threading.Thread(target=self._drain_master, args=(master,), daemon=True,
                         name=f"dbgfwd-openssh-{self.settings.alias}").start()
        # ssh's own ConnectTimeout bounds the connect; a person typing a code gets two more minutes.
        deadline = time.monotonic() + max(timeout, 1.0) + (120.0 if with_tty else 0.0)
        while True:
            if master.poll() is not None:
                master.wait()
                time.sleep(0.05)  # let the drain thread take the last lines
                raise classify("\n".join(self._master_err), self.settings)
            if os.path.exists(self._own_path):  # ssh creates the control socket once logged in
                self._alive = True
                return
            if self._closed.is_set() or time.monotonic() > deadline:
                self._stop_master()
                raise UnreachableError(f"ssh: connecting to {self.settings.label} timed out",
                                       hint="check the host and the network; dbgfwd keeps trying")
            time.sleep(0.02)

    def _drain_master(self, master: subprocess.Popen) -> None:
        assert master.stderr is not None
        for raw in iter(master.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._master_err.append(line)
                log.debug("ssh %s: %s", self.settings.alias, line)
        master.stderr.close()
        master.wait()
        if master is self._master and not self._closed.is_set():
            self._alive = False
            self._warn(f"ssh: the connection to {self.settings.alias} ended "
                       f"({_last_line(chr(10).join(self._master_err)) or 'no reason given'}); reconnecting")

    def _check(self, users: bool = False) -> bool:
        cmd = [self._ssh, *self.settings.args, *([] if users else ["-S", self._own_path]), "-O", "check",
               self.settings.alias]
        try:
            return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _stop_master(self) -> None:
        self._alive = False
        m, self._master = self._master, None
        if m is not None:
            _end(m)

    def _lost(self) -> None:
        """A command said the control connection is gone (the user's master stopped, say)."""
        if self._users_master and not self._check(users=True):
            self._alive = False

    def close(self) -> None:
        self._closed.set()
        for client in list(self._clients):
            _end(client)
        with self._lock:
            self._stop_master()
        with contextlib.suppress(OSError):
            os.unlink(self._own_path)

    # ---- what the provider uses ----

    def open_channel(self, port: int, timeout: float) -> socket.socket:
        """A stream to 127.0.0.1:port on the host: an `ssh -W` mux client on one end of a socketpair,
        returned once the master confirmed the channel."""
        try:
            self.transport(timeout)
        except DbgfwdError as exc:
            raise upstream(exc) from None
        ours, theirs = socket.socketpair()
        try:
            client = subprocess.Popen(self._base("-v", "-W", f"127.0.0.1:{port}", self.settings.alias),
                                      stdin=theirs, stdout=theirs, stderr=subprocess.PIPE)
        except OSError as exc:
            ours.close()
            theirs.close()
            raise UpstreamError(f"ssh: cannot run ssh ({exc})", retryable=False) from None
        theirs.close()
        try:
            said = _wait_opened(client, time.monotonic() + timeout)
        except BaseException:
            _end(client)
            ours.close()
            raise
        if said is not None:
            _end(client)
            ours.close()
            self._lost()
            if "administratively prohibited" in "\n".join(self._master_err).lower():
                raise UpstreamError(f"ssh: {self.settings.alias} refused port forwarding",
                                    hint="enable AllowTcpForwarding in that host's sshd_config", retryable=False)
            raise UpstreamError(f"ssh: opening port {port} on {self.settings.alias} failed ({said})",
                                hint="the rank may not be listening yet; dbgfwd retries", retryable=True)
        self._clients.add(client)
        return _ClientSocket.wrap(ours, client, self._clients)

    def run(self, command: str, timeout: float, stdin: bytes | None = None) -> tuple[int, str]:
        self.transport(timeout)
        try:
            res = subprocess.run(self._base("-T", self.settings.alias, "--", command), input=stdin or b"",
                                 capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UnreachableError(f"ssh: command on {self.settings.alias} did not finish in {timeout:g}s",
                                   hint="the host may be overloaded; dbgfwd retries") from None
        except OSError as exc:
            raise UnreachableError(f"ssh: cannot run ssh ({exc})") from None
        if res.returncode == 255 and res.stderr:
            self._lost()
            raise UnreachableError(f"ssh: command on {self.settings.alias} failed "
                                   f"({_last_line(res.stderr.decode('utf-8', 'replace'))})",
                                   hint="dbgfwd retries; the keepalive decides whether the host is gone")
        if len(res.stdout) > EXEC_OUTPUT_LIMIT:
            raise UnreachableError(f"ssh: command on {self.settings.alias} printed more than "
                                   f"{EXEC_OUTPUT_LIMIT >> 20} MiB")
        return res.returncode, res.stdout.decode("utf-8", "replace")


def _wait_opened(client: subprocess.Popen, deadline: float) -> str | None:
    """None once the mux client says the master opened the channel; else why not (the client then ended)."""
    assert client.stderr is not None
    fd = client.stderr.fileno()
    buf, lines = b"", []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timed out"
            if not readable(fd, min(left, 0.5)):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                client.wait(5)
                return _last_line("\n".join(lines)) or f"ssh exited with status {client.returncode}"
            buf += chunk
            *done, buf = buf.split(b"\n")
            for raw in done:
                line = raw.decode("utf-8", "replace").rstrip()
                if _OPENED in line:
                    return None
                lines.append(line)
    finally:
        client.stderr.close()  # ssh ignores SIGPIPE: its later -v lines just go nowhere


def _end(client: subprocess.Popen) -> None:
    if client.poll() is None:
        client.terminate()
        try:
            client.wait(5)
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait(5)


class _ClientSocket(socket.socket):
    """Our end of the socketpair; closing it also ends its `ssh -W` client."""

    _client: subprocess.Popen | None = None
    _registry: set | None = None

    @classmethod
    def wrap(cls, sock: socket.socket, client: subprocess.Popen, registry: set) -> "_ClientSocket":
        s = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        s._client, s._registry = client, registry
        return s

    def close(self) -> None:
        super().close()
        client, self._client = self._client, None
        if client is not None:
            if self._registry is not None:
                self._registry.discard(client)
            _end(client)


def control_dir() -> str:
    """A fresh private directory (0700) for dbgfwd's control sockets; short, for the socket path limit."""
    return tempfile.mkdtemp(prefix="dbgfwd-ssh-", dir="/tmp" if os.path.isdir("/tmp") else None)
