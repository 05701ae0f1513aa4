"""Per-host SSH settings resolved the way OpenSSH users expect, from ~/.ssh/config (or --ssh-config).

Command line beats config beats defaults, as in `ssh`: `alice@node:2222` overrides `User`/`Port`.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from dbgfwd.errors import BadFileError, NotFoundPathError, UsageError
from dbgfwd.providers.ssh.targets import HostSpec, parse_host_spec

DEFAULT_CONFIG = "~/.ssh/config"
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
# A stopped rank sends nothing for hours: keep idle transports alive even when the config says nothing.
DEFAULT_ALIVE_INTERVAL = 15.0
DEFAULT_ALIVE_COUNT = 3
MAX_JUMP_DEPTH = 8


def host_label(alias: str, hostname: str, port: int) -> str:
    """How messages name a host: the name typed, with where it leads when that is not plain `alias:22`."""
    where = hostname if port == 22 else f"{hostname}:{port}"
    return alias if alias == hostname and port == 22 else f"{alias} ({where})"


@dataclass(frozen=True)
class HostSettings:
    """How to reach one host: address, login and the chain of jump hosts in front of it."""

    alias: str  # the name the user typed (shown in messages)
    hostname: str  # where to connect (HostName)
    port: int
    user: str
    identity_files: tuple[str, ...]  # explicit IdentityFile/--identity; () = OpenSSH defaults
    use_agent: bool
    known_hosts: tuple[str, ...]  # files checked for the host key (user files, then global)
    accept_new_host_keys: bool
    connect_timeout: float
    alive_interval: float
    alive_count: int
    jumps: tuple["HostSettings", ...] = ()  # first hop first
    host_key_alias: str | None = None

    @property
    def label(self) -> str:
        return host_label(self.alias, self.hostname, self.port)

    @property
    def hostkey_name(self) -> str:
        """The name known_hosts is searched for, as OpenSSH does: HostKeyAlias as it is (whatever the port),
        else the host name, bracketed with its port when that is not 22."""
        if self.host_key_alias:
            return self.host_key_alias
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


@dataclass(frozen=True)
class Defaults:
    """Values from dbgfwd's own options, applied under whatever ssh config says."""

    config_path: str | None = None  # None: ~/.ssh/config if it exists
    user: str | None = None
    identity_files: tuple[str, ...] = ()
    accept_new_host_keys: bool = False
    connect_timeout: float = 10.0


def load_config(path: str | None):
    """A paramiko SSHConfig (empty when the default file does not exist)."""
    import paramiko

    explicit = path is not None
    target = Path(os.path.expanduser(path or DEFAULT_CONFIG))
    if not target.exists():
        if explicit:
            raise NotFoundPathError(f"ssh config {target} does not exist", hint="fix the --ssh-config path")
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(target))
    except (paramiko.ConfigParseError, ValueError, OSError) as exc:
        raise BadFileError(target, f"cannot parse ssh config ({exc})",
                           hint="check it with `ssh -G HOST -F FILE`") from None


def resolve(spec: HostSpec, config, defaults: Defaults, _depth: int = 0) -> HostSettings:
    """Settings for `spec` after applying `config` (a paramiko SSHConfig) and `defaults`."""
    if _depth > MAX_JUMP_DEPTH:
        raise UsageError(f"ProxyJump chain for {spec.host} is longer than {MAX_JUMP_DEPTH} hops (a loop?)",
                         hint="check the ProxyJump lines of your ssh config")
    entry = config.lookup(spec.host)
    user = spec.user or defaults.user or entry.get("user") or getpass.getuser()
    port = spec.port or _int(entry.get("port"), 22, "Port", spec.host)
    identities = tuple(defaults.identity_files) + tuple(entry.get("identityfile", ()))
    identities = tuple(dict.fromkeys(os.path.expanduser(p) for p in identities))
    only = str(entry.get("identitiesonly", "no")).lower() == "yes"
    agent = str(entry.get("identityagent", "")).lower() != "none" and not (only and identities)
    strict = str(entry.get("stricthostkeychecking", "ask")).lower()
    user_files = _split_files(entry.get("userknownhostsfile")) or DEFAULT_KNOWN_HOSTS
    global_files = _split_files(entry.get("globalknownhostsfile")) or GLOBAL_KNOWN_HOSTS
    settings = HostSettings(
        alias=spec.host,
        hostname=entry.get("hostname", spec.host),
        port=port,
        user=user,
        identity_files=identities,
        use_agent=agent,
        known_hosts=tuple(os.path.expanduser(p) for p in (*user_files, *global_files)),
        accept_new_host_keys=defaults.accept_new_host_keys or strict in ("no", "off", "accept-new"),
        connect_timeout=_float(entry.get("connecttimeout"), defaults.connect_timeout, "ConnectTimeout", spec.host),
        alive_interval=_float(entry.get("serveraliveinterval"), DEFAULT_ALIVE_INTERVAL,
                              "ServerAliveInterval", spec.host) or DEFAULT_ALIVE_INTERVAL,
        alive_count=max(1, _int(entry.get("serveralivecountmax"), DEFAULT_ALIVE_COUNT,
                                "ServerAliveCountMax", spec.host)),
        host_key_alias=entry.get("hostkeyalias"),
    )
    proxy_command = entry.get("proxycommand")
    if proxy_command and proxy_command.strip().lower() != "none":
        # Refused with or without ProxyJump: ignoring it would send the connection straight to a host that is
        # only reachable through the proxy, and the user would get "cannot resolve" instead of the reason.
        raise UsageError(f"{spec.host}: ProxyCommand is not supported, only ProxyJump",
                         hint="replace `ProxyCommand ssh -W %h:%p jump` with `ProxyJump jump`, or use "
                              "--ssh-backend openssh (your own ssh runs it)")
    jump_text = entry.get("proxyjump")
    if not jump_text or jump_text.lower() == "none":
        return settings
    hops = [_jump_spec(h, spec.host) for h in jump_text.split(",") if h.strip()]
    # Like OpenSSH: the first hop is reached with its own config (including its own ProxyJump); later
    # hops are reached through the hop before them.
    first = resolve(hops[0], config, Defaults(defaults.config_path, None, defaults.identity_files,
                                             defaults.accept_new_host_keys, defaults.connect_timeout),
                    _depth + 1)
    chain = list(first.jumps) + [_without_jumps(first)]
    for hop in hops[1:]:
        chain.append(_without_jumps(resolve(hop, _NoJumpConfig(config),
                                            Defaults(defaults.config_path, None, defaults.identity_files,
                                                     defaults.accept_new_host_keys,
                                                     defaults.connect_timeout), _depth + 1)))
    return HostSettings(**{**settings.__dict__, "jumps": tuple(chain)})


def _without_jumps(s: HostSettings) -> HostSettings:
    return HostSettings(**{**s.__dict__, "jumps": ()})


class _NoJumpConfig:
    """A config view that hides ProxyJump (later hops are reached through earlier ones)."""

    def __init__(self, config):
        self._config = config

    def lookup(self, host):
        entry = dict(self._config.lookup(host))
        entry.pop("proxyjump", None)
        entry.pop("proxycommand", None)
        return entry


def _jump_spec(text: str, host: str) -> HostSpec:
    text = text.strip()
    if text.startswith("ssh://"):
        text = text[len("ssh://"):]
    try:
        return parse_host_spec(text)
    except UsageError as exc:
        raise UsageError(f"ProxyJump of {host}: {exc.message}", hint="ProxyJump takes [user@]host[:port],...") \
            from None


def _split_files(value) -> tuple[str, ...]:
    if not value:
        return ()
    parts = value if isinstance(value, (list, tuple)) else str(value).split()
    return tuple(p for p in parts if p.lower() != "none")


def _int(value, default: int, name: str, host: str) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"ssh config: {name} {value!r} for {host} is not a number") from None


def _float(value, default: float, name: str, host: str) -> float:
    if value in (None, ""):
        return default
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"ssh config: {name} {value!r} for {host} is not a number") from None


def resolve_all(specs: Sequence[HostSpec], defaults: Defaults) -> list[HostSettings]:
    config = load_config(defaults.config_path)
    return [resolve(s, config, defaults) for s in specs]
