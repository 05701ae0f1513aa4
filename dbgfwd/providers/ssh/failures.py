"""Every way reaching a host can fail, as one line naming the host plus one line saying what to do."""

from __future__ import annotations

import errno
import socket
from typing import Callable

from dbgfwd.errors import AuthError, DbgfwdError, UnreachableError, UpstreamError
from dbgfwd.providers.ssh.settings import HostSettings

_PORT_HINT = "check that the host is up and sshd listens on that port (Port in ssh config, or host:port)"


class UnknownHostKey(AuthError):
    pass


class HostKeyPolicy:
    """paramiko MissingHostKeyPolicy: refuse unknown keys unless told to accept them, loudly."""

    def __init__(self, hop: HostSettings, warn: Callable[[str], None]):
        self.hop, self.warn = hop, warn

    def missing_host_key(self, client, hostname, key):
        fp = fingerprint(key)
        if self.hop.accept_new_host_keys:
            self.warn(f"accepting UNVERIFIED host key {key.get_name()} {fp} of {hostname} "
                      "(--insecure-accept-new-host-keys); not saved to known_hosts")
            client.get_host_keys().add(hostname, key.get_name(), key)
            return
        raise UnknownHostKey(
            f"ssh: host key of {self.hop.label} is not in known_hosts ({key.get_name()} {fp})",
            hint=f"check and accept it once with `ssh -p {self.hop.port} {self.hop.hostname}`, "
                 "or pass --insecure-accept-new-host-keys")


def fingerprint(key) -> str:
    import base64
    import hashlib

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno is not None:
        return {errno.ECONNREFUSED: "connection refused", errno.EHOSTUNREACH: "no route to host",
                errno.ENETUNREACH: "network unreachable", errno.ECONNRESET: "connection reset",
                errno.ETIMEDOUT: "timed out"}.get(exc.errno, exc.strerror or str(exc))
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def dns(hop: HostSettings, exc: socket.gaierror) -> UnreachableError:
    named = f" (HostName of {hop.alias})" if hop.hostname != hop.alias else ""
    return UnreachableError(f"ssh: cannot resolve host name {hop.hostname!r}{named}: {exc.strerror or exc}",
                            hint="check the spelling, or set HostName for it in ~/.ssh/config")


def unreachable(hop: HostSettings, exc: OSError | None, timeout: float) -> UnreachableError:
    reason = f"timed out after {timeout:g}s" if isinstance(exc, socket.timeout) else describe(exc or OSError())
    return UnreachableError(f"ssh: cannot reach {hop.label} port {hop.port}: {reason}", hint=_PORT_HINT)


def handshake(exc: Exception, hop: HostSettings) -> DbgfwdError:
    """Map what paramiko's connect raised to our errors."""
    import paramiko

    if isinstance(exc, DbgfwdError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        return AuthError(
            f"ssh: host key of {hop.label} CHANGED ({exc.key.get_name()} {fingerprint(exc.key)} instead of "
            f"{fingerprint(exc.expected_key)}): possible man-in-the-middle; refusing to connect",
            hint=f"if the change is expected, remove the old key with `ssh-keygen -R {hop.hostkey_name}`")
    if isinstance(exc, paramiko.AuthenticationException):
        tried = "ssh-agent keys, " if hop.use_agent else ""
        tried += ", ".join(hop.identity_files) if hop.identity_files else "~/.ssh/id_* keys"
        return AuthError(
            f"ssh: authentication as {hop.user!r} to {hop.label} failed (tried {tried})",
            hint="load your key with `ssh-add`, set IdentityFile/User for the host in ~/.ssh/config, "
                 "or pass --identity / --ssh-user; for two-factor, Kerberos or FIDO logins use "
                 "--ssh-backend openssh")
    if isinstance(exc, paramiko.SSHException) and "authentication methods available" in str(exc):
        return AuthError(
            f"ssh: no usable key to log in to {hop.label} as {hop.user!r} (no ssh-agent keys, no key files found)",
            hint="load your key with `ssh-add`, or pass --identity FILE (or set IdentityFile in ~/.ssh/config)")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return UnreachableError(f"ssh: {hop.label} accepted TCP but did not complete the SSH handshake (timed out)",
                                hint=_PORT_HINT)
    if isinstance(exc, (paramiko.SSHException, EOFError, OSError)):
        return UnreachableError(f"ssh: SSH handshake with {hop.label} failed ({describe(exc)})", hint=_PORT_HINT)
    return UnreachableError(f"ssh: connecting to {hop.label} failed ({describe(exc)})", hint=_PORT_HINT)


def open_hop_channel(transport, via: HostSettings, hop: HostSettings, timeout: float):
    """The direct-tcpip channel from jump host `via` to the next hop's sshd."""
    import paramiko

    try:
        return transport.open_channel("direct-tcpip", (hop.hostname, hop.port), ("127.0.0.1", 0), timeout=timeout)
    except paramiko.ChannelException as exc:
        return _raise(UnreachableError(
            f"ssh: ProxyJump host {via.alias} could not connect to {hop.hostname}:{hop.port} ({exc.text})",
            hint=f"check that {hop.hostname}:{hop.port} is right as seen from {via.alias} "
                 "(HostName/Port in ssh config) and that AllowTcpForwarding is on there"))
    except (paramiko.SSHException, EOFError, OSError) as exc:
        return _raise(UnreachableError(f"ssh: ProxyJump host {via.alias} dropped the connection ({describe(exc)})",
                                       hint="check the jump host"))


def _raise(exc: DbgfwdError):
    raise exc


def on_route(exc: DbgfwdError, hop: HostSettings, target: HostSettings) -> DbgfwdError:
    """Say which hop of a ProxyJump chain failed (the target's own failures pass unchanged)."""
    if hop is target or not target.jumps:
        return exc
    exc.message = f"{exc.message} [ProxyJump hop {hop.alias} on the way to {target.alias}]"
    exc.args = (exc.message,)
    return exc


def upstream(exc: DbgfwdError) -> UpstreamError:
    """A connect failure as seen by open_stream: unreachable may pass, auth/host keys will not."""
    if isinstance(exc, UpstreamError):
        return exc
    return UpstreamError(exc.message, exc.hint, retryable=isinstance(exc, UnreachableError), code=exc.code)


def channel_refused(exc, settings: HostSettings, port: int) -> UpstreamError:
    """direct-tcpip open failure: nothing listening (may pass) or forwarding forbidden (will not)."""
    if exc.code == 1:  # SSH_OPEN_ADMINISTRATIVELY_PROHIBITED
        return UpstreamError(f"ssh: {settings.alias} refused port forwarding ({exc.text})",
                             hint="enable AllowTcpForwarding in that host's sshd_config", retryable=False)
    return UpstreamError(f"ssh: nothing accepts connections on 127.0.0.1:{port} on {settings.alias} ({exc.text})",
                         hint="the rank may not be listening yet; dbgfwd retries", retryable=True)
