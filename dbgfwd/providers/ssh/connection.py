"""One SSH connection per host, shared by all of that host's ranks (like `ssh -L` with many forwards).

`HostConnection` dials the host (through its ProxyJump chain), checks its host key, authenticates,
keeps the transport alive, notices when it dies and reconnects on the next use. Every failure is
turned into a one-line DbgfwdError naming the host and the fix (`dbgfwd.providers.ssh.failures`).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from typing import Callable

from dbgfwd.errors import DbgfwdError, UnreachableError, UpstreamError
from dbgfwd.providers.ssh import failures
from dbgfwd.providers.ssh.reconnect import EXEC_OUTPUT_LIMIT, Reconnecting
from dbgfwd.providers.ssh.settings import HostSettings

log = logging.getLogger("dbgfwd.ssh")

_TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)
# Channel windows: paramiko's defaults (2 MiB window, 32 KiB packets) are fine for DAP traffic.


LATE_OPEN_WAIT = 120.0  # seconds an open keeps waiting for the server after its caller gave up


class HostConnection(Reconnecting):
    """The SSH transport of one host. Thread-safe; reconnects lazily after the transport died."""

    def __init__(self, key: str, settings: HostSettings, warn: Callable[[str], None] | None = None):
        super().__init__()
        self.key = key  # the host spec as the user typed it (Target.key)
        self.settings = settings
        self._warn = warn or log.warning
        self._clients: list = []  # paramiko SSHClients: jump hops first, this host last
        self._transport = None
        # port -> channels whose open the server confirmed after their caller had given up (see open_channel)
        self._late: dict[int, list] = {}
        self._late_lock = threading.Lock()

    # ---- connection management ----

    @property
    def connected(self) -> bool:
        t = self._transport
        return t is not None and t.is_active()

    def transport(self, timeout: float | None = None):
        """The live transport, connecting first if there is none. Raises DbgfwdError subclasses."""
        return self._ensure(timeout, self._live, self._new_transport)

    def _live(self):
        t = self._transport
        return t if t is not None and t.is_active() else None

    def _new_transport(self, timeout: float):
        self._teardown()
        self._clients = self._connect(timeout)
        self._transport = self._clients[-1].get_transport()
        threading.Thread(target=self._watchdog, args=(self._transport,), daemon=True,
                         name=f"dbgfwd-ssh-alive-{self.settings.alias}").start()
        return self._transport

    def _connect(self, timeout: float) -> list:
        s = self.settings
        chain = [*s.jumps, s]
        clients: list = []
        try:
            for i, hop in enumerate(chain):
                via = chain[i - 1] if i else None
                try:
                    if via is None:
                        sock = _dial(hop, timeout)
                    else:
                        sock = failures.open_hop_channel(clients[-1].get_transport(), via, hop, timeout)
                    clients.append(_handshake(hop, sock, timeout, self._warn))
                except DbgfwdError as exc:
                    raise failures.on_route(exc, hop, s) from None
        except BaseException:
            for c in reversed(clients):
                c.close()
            raise
        return clients

    def _teardown(self) -> None:
        for client in reversed(self._clients):
            try:
                client.close()
            except Exception:  # closing a dead transport may raise anything; it is gone either way
                pass
        self._clients = []
        self._transport = None

    def drop(self, transport) -> None:
        """Close `transport`, the one a failure was seen on (the next use reconnects).

        Never "whatever is current": the failure may surface after another thread already
        reconnected, and closing that fresh transport would cut every forward it carries."""
        if transport is not None:
            transport.close()

    def _drop_if_dead(self, transport) -> None:
        if transport is not None and not transport.is_active():
            self.drop(transport)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._teardown()

    # ---- keepalive (ServerAliveInterval / ServerAliveCountMax semantics) ----

    def _watchdog(self, transport) -> None:
        interval, count = self.settings.alive_interval, self.settings.alive_count
        missed = 0
        while not self._closed.wait(interval) and transport.is_active():
            if _ping(transport, interval):
                missed = 0
                continue
            missed += 1
            if missed >= count:
                self._warn(f"ssh: {self.settings.alias} did not answer {count} keepalives "
                           f"({interval:g}s apart); reconnecting")
                transport.close()
                return

    # ---- what the provider uses ----

    def open_channel(self, port: int, timeout: float):
        """A direct-tcpip channel to 127.0.0.1:port as seen on the host.

        An open the server confirms only after `timeout` (a link stalled for a while) is not lost: paramiko
        would keep such a channel open and unread, sshd's connection to the rank's debugpy with it, until the
        transport closes, and then close it without a word, which can leave debugpy unable to serve the next
        debugger (docs/debugpy.md). The late channel is kept for the next open of the same port instead: the
        retry of the client that gave up, which then makes no second connection."""
        import paramiko

        try:
            transport = self.transport(timeout)
        except DbgfwdError as exc:
            raise failures.upstream(exc) from None
        late = self._take_late(transport, port)
        if late is not None:
            return late
        outcome: list = []
        settled = threading.Lock()
        done = threading.Event()

        def open_it() -> None:
            try:
                got = (transport.open_channel("direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0),
                                              timeout=max(timeout, LATE_OPEN_WAIT)), None)
            except BaseException as exc:  # handed to the caller, who sorts them below
                got = (None, exc)
            with settled:
                if not done.is_set():
                    outcome.append(got)
                    done.set()
                    return
            if got[0] is not None:  # the caller gave up already: keep it for the next open of this port
                with self._late_lock:
                    self._late.setdefault(port, []).append(got[0])

        threading.Thread(target=open_it, daemon=True, name=f"dbgfwd-ssh-open-{port}").start()
        done.wait(timeout)
        with settled:  # the opener delivers under this lock, or finds `done` set and keeps a late channel
            if not outcome:
                done.set()
                raise UpstreamError(f"ssh: opening port {port} on {self.settings.alias} did not finish in "
                                    f"{timeout:g}s", retryable=True)
        channel, exc = outcome[0]
        if exc is not None:
            if isinstance(exc, paramiko.ChannelException):
                raise failures.channel_refused(exc, self.settings, port) from None
            if isinstance(exc, (paramiko.SSHException, EOFError, OSError)):
                # A failure here is not a verdict on the connection: the keepalive watchdog gives that.
                # Closing the shared transport would cut every debugger on the host. Only a transport
                # already dead is let go, so the next use reconnects.
                self._drop_if_dead(transport)
                raise UpstreamError(f"ssh: opening port {port} on {self.settings.alias} failed "
                                    f"({failures.describe(exc)})", retryable=True) from None
            raise exc
        channel.settimeout(None)
        return channel

    def _take_late(self, transport, port: int):
        """A channel to `port` confirmed after its caller gave up, still open on the live transport; or None."""
        with self._late_lock:
            waiting = self._late.get(port, [])
            while waiting:
                channel = waiting.pop(0)
                if channel.get_transport() is transport and transport.is_active() and not channel.closed:
                    channel.settimeout(None)
                    return channel
        return None

    def run(self, command: str, timeout: float, stdin: bytes | None = None) -> tuple[int, str]:
        """Run `command` on the host (exec channel), `stdin` on its standard input; (exit status, stdout).
        Raises DbgfwdError."""
        import paramiko

        transport = self.transport(timeout)
        deadline = time.monotonic() + timeout
        try:
            channel = transport.open_session(timeout=timeout)
            try:
                channel.settimeout(max(0.1, deadline - time.monotonic()))
                channel.exec_command(command)
                if stdin:
                    channel.sendall(stdin)
                channel.shutdown_write()
                return collect_output(channel, deadline)
            finally:
                channel.close()
        except socket.timeout:
            raise UnreachableError(f"ssh: command on {self.settings.alias} did not finish in {timeout:g}s",
                                   hint="the host may be overloaded; dbgfwd retries") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self._drop_if_dead(transport)  # a probe's timeout never takes the host's forwards down
            raise UnreachableError(f"ssh: command on {self.settings.alias} failed ({failures.describe(exc)})",
                                   hint="dbgfwd retries; the keepalive decides whether the host is gone") from None


def collect_output(channel, deadline: float) -> tuple[int, str]:
    """(exit status, stdout) of an exec channel: read to end of file, then wait for the exit status.

    sshd sends end-of-file before the exit-status message, and paramiko handles each on its transport
    thread: right after recv() returned b"" the status may not be there yet, so wait for it (bounded by
    the deadline) rather than read it at once. -1: the command ended without an exit status."""
    out = bytearray()
    while True:
        chunk = channel.recv(65536)
        if not chunk:
            break
        out += chunk
        if len(out) > EXEC_OUTPUT_LIMIT or time.monotonic() > deadline:
            raise socket.timeout()
        channel.settimeout(max(0.1, deadline - time.monotonic()))
    ready = channel.status_event.wait(max(0.0, deadline - time.monotonic()))
    return (channel.recv_exit_status() if ready else -1), out.decode("utf-8", "replace")


def _ping(transport, timeout: float) -> bool:
    """One keepalive@openssh.com round trip (sshd answers every global request, even unknown ones)."""
    done = threading.Event()

    def request():
        try:
            transport.global_request("keepalive@openssh.com", wait=True)
        except Exception:  # a dying transport raises various things; the caller sees it as a miss
            return
        if transport.is_active():
            done.set()

    threading.Thread(target=request, daemon=True, name="dbgfwd-ssh-ping").start()
    return done.wait(timeout)


def _dial(hop: HostSettings, timeout: float) -> socket.socket:
    """TCP to the first hop, with DNS and connect failures told apart."""
    try:
        infos = socket.getaddrinfo(hop.hostname, hop.port, 0, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise failures.dns(hop, exc) from None
    last: OSError | None = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        # Unacknowledged data (our keepalives) for this long means the peer is gone: fail fast
        # instead of after the kernel's ~15 minutes of retransmissions.
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT,
                            int(hop.alive_interval * hop.alive_count * 1000))
        except OSError:
            pass
        return sock
    raise failures.unreachable(hop, last, timeout)


# AES-GCM first (paramiko lists it last): one AEAD operation per packet instead of AES-CTR plus a separate
# HMAC-SHA2, measured at 15-18 us instead of 28 us per 64-byte packet sent and received, and far less per byte
# on bulk transfers. Every OpenSSH since 6.2 offers it; with a server that does not, paramiko's order applies.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


# paramiko's transport thread reads with a 0.1 s timeout to notice close() and its keepalive timer: ten wake-ups a
# second per host, 1.2 ms of CPU a second each here (half of an idle 4-host attach). Once a second is enough for
# the keepalive (whole seconds), and close() wakes the thread itself.
TRANSPORT_POLL = 1.0


@functools.lru_cache(maxsize=None)
def _transport_class():
    import paramiko

    class Transport(paramiko.Transport):
        _active_check_timeout = TRANSPORT_POLL

        def close(self) -> None:
            # Closing a socket does not wake a thread waiting on it: shut it down first, and the transport
            # thread ends now rather than at its next timeout.
            if self.active and isinstance(self.sock, socket.socket):
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            super().close()

    return Transport


def _transport(sock, **kwargs):
    from dbgfwd.providers.ssh import direct

    transport = _transport_class()(sock, **kwargs)
    options = transport.get_security_options()
    options.ciphers = PREFERRED_CIPHERS + tuple(c for c in options.ciphers if c not in PREFERRED_CIPHERS)
    direct.install(transport)
    return transport


def _handshake(hop: HostSettings, sock, timeout: float, warn: Callable[[str], None]):
    """SSH handshake, host key check and authentication on `sock`; returns a connected SSHClient."""
    import paramiko

    client = paramiko.SSHClient()
    for path in hop.known_hosts:
        if os.path.isfile(path):
            try:
                client.load_system_host_keys(path)
            except (OSError, paramiko.SSHException, ValueError) as exc:
                warn(f"ssh: skipping unreadable known_hosts file {path} ({exc})")
    client.set_missing_host_key_policy(failures.HostKeyPolicy(hop, warn))
    identities = [p for p in hop.identity_files if os.path.isfile(p)]
    for missing in sorted(set(hop.identity_files) - set(identities)):
        warn(f"ssh: identity file {missing} for {hop.alias} does not exist")
    try:
        client.connect(
            # With `sock` given, paramiko uses hostname and port only to look the host key up, bracketing
            # the name with a port that is not 22: a HostKeyAlias is looked up bare, as OpenSSH does.
            hop.host_key_alias or hop.hostname, port=22 if hop.host_key_alias else hop.port, username=hop.user,
            sock=sock,
            key_filename=identities or None, allow_agent=hop.use_agent,
            look_for_keys=not hop.identity_files, timeout=timeout, banner_timeout=timeout,
            auth_timeout=timeout, channel_timeout=timeout, transport_factory=_transport,
        )
    except Exception as exc:
        client.close()
        sock.close()
        raise failures.handshake(exc, hop) from exc
    transport = client.get_transport()
    # paramiko's own keepalive keeps NATs and idle timeouts from dropping us between our checks.
    transport.set_keepalive(max(1, int(hop.alive_interval)))
    return client
