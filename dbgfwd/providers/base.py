"""The provider interface: how dbgfwd reaches ranks, whatever the transport.

A provider knows one kind of place ranks run (this machine, SSH hosts, Kubernetes pods, AWS Batch
jobs through SSM). The forwarding engine (`dbgfwd.engine`) never asks which provider it holds; it
only calls the methods below.

Writing a provider
------------------
1. Subclass `Provider`, set `name`, `title`, `capabilities`, and list your command-line options in
   `options` (they appear in `dbgfwd attach --help` under a panel named after `title`).
2. Import your SDK (kubernetes, boto3, paramiko) *inside* methods, never at module top level, so
   `dbgfwd --help` stays fast. Report a missing SDK from `availability()`.
3. Register the class in `dbgfwd/providers/__init__.py`.

Threading contract
------------------
* `discover()` and `probe()` are called from the engine's monitor thread, one at a time.
* `open_stream()` is called from per-connection threads, possibly many at once: it must be
  thread-safe. It blocks until the stream is open or fails.
* `keepalive()` is called from the monitor thread every `keepalive_interval` seconds.
* `close()` is called once, from the main thread, after every stream has been closed.

Rules
-----
* NEVER connect to a debug port just to check it (debugpy breaks: see shared/PROTOCOLS.md).
  Readiness comes from `probe()`: rank markers and listening sockets read out of band.
* Raise `dbgfwd.errors.UpstreamError(retryable=...)` from `open_stream()`; raise the other
  `DbgfwdError` subclasses (AuthError, UnreachableError, NotFoundError, BadFileError) from
  `discover()` with a message naming the target and a hint saying what to do.
* Never put tokens, keys or presigned URLs in messages, logs or `Target.detail`.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Protocol, Sequence

from dbgfwd.providers.option import ProviderOption  # noqa: F401  (part of the provider interface)
from dbgfwd.rank.markers import ProbeResult


class Capability(enum.Enum):
    """What a provider can do beyond the required minimum (the engine adapts to these)."""

    # probe() returns real readiness (markers / listening sockets) read out of band.
    OUT_OF_BAND_READINESS = "out-of-band-readiness"
    # Ranks are on this machine: their remote ports share the local port space, so the planner must
    # not hand those ports to local listeners.
    SHARES_LOCAL_PORTS = "shares-local-ports"
    # discover() can be called repeatedly and cheaply to find ranks that appear or are replaced later.
    REDISCOVERY = "rediscovery"
    # run() executes a shell command where the ranks run (as their user), e.g. for `dbgfwd stacks`.
    EXEC = "exec"


@dataclass(frozen=True)
class ProviderConfig:
    """Everything a provider is constructed with (frozen; built by the CLI)."""

    targets: tuple[str, ...] = ()  # positional target specs as the user typed them
    options: Mapping[str, Any] = field(default_factory=dict)  # ProviderOption.key -> value
    base_port: int = 5678  # remote debugpy port of local rank 0
    ranks_per_node: int | None = None  # None: ask the ranks (markers), else this many per target
    verbose: int = 0

    def opt(self, key: str, default: Any = None) -> Any:
        value = self.options.get(key)
        return default if value is None else value


@dataclass(frozen=True)
class RankInfo:
    """A rank a provider knows about on a target (usually from its marker)."""

    rank: int  # global rank
    local_rank: int
    port: int  # the remote port its debugpy listens on


@dataclass(frozen=True)
class Target:
    """One place ranks run: this machine, an SSH host, a pod, a Batch node.

    `key` must stay the same when the *slot* is the same even if the thing behind it was replaced
    (a pod recreated under a new name for the same replica index keeps its key); the engine uses
    it to carry local ports and state across replacements. `handle` is yours: the engine passes it
    back to `open_stream()`/`probe()` untouched.
    """

    key: str
    name: str  # shown to users: "worker-1", "node03", "localhost"
    node_index: int = 0  # position of this target in the job (sorts targets; rank base fallback)
    rank_base: int | None = None  # global rank of local rank 0 here, when the workload says so
    ranks: tuple[RankInfo, ...] = ()  # ranks known on this target (from markers); () = unknown yet
    running: bool = True  # False: pending/starting; shown as waiting, picked up when it runs
    status: str = "running"  # provider's word for the phase ("Running", "Pending", "RUNNABLE", ...)
    remote_root: str | None = None  # working directory of the ranks, for pathMappings
    detail: Mapping[str, str] = field(default_factory=dict)  # shown in `ls`; never secrets
    handle: Any = None


@dataclass(frozen=True)
class Discovery:
    """Result of one discovery pass. `where` says where the provider looked, for error messages."""

    targets: tuple[Target, ...]
    where: str


class Stream(Protocol):
    """A connected byte stream to one rank's debug port (socket-like).

    A real `socket.socket` satisfies it (and gets the relay's zero-copy path); so does a paramiko
    Channel, or any object with these four methods (the Kubernetes websocket stream, SSM smux streams).
    The relay hands a stream that is not a real socket immutable `bytes` it may keep.
    """

    def recv(self, n: int) -> bytes: ...

    def sendall(self, data: bytes) -> None: ...

    def shutdown(self, how: int) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""  # why not, and how to fix it


class Provider(ABC):
    """Base class of every provider. See the module docstring for the contract."""

    name: ClassVar[str]
    title: ClassVar[str]  # e.g. "Kubernetes / OpenShift"
    summary: ClassVar[str] = ""  # one line for `dbgfwd attach --help`
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    options: ClassVar[Sequence[ProviderOption]] = ()
    # Seconds between keepalive() calls while attached.
    keepalive_interval: ClassVar[float] = 30.0
    # How far apart probes of a settled target may drift while they keep finding the same thing (the engine
    # doubles the interval up to this). A provider whose probe is costly and that hears of pod/host changes
    # another way (a watch) raises it; a client's failed connect makes a target hot again at once.
    settled_probe_max: ClassVar[float] = 5.0

    def __init__(self, config: ProviderConfig):
        self.config = config

    @classmethod
    def availability(cls) -> Availability:
        """Whether this provider can run here (SDK importable, helper binary present)."""
        return Availability(True)

    @classmethod
    def claims(cls, config: ProviderConfig) -> bool:
        """True when the user's input clearly means this provider (e.g. one of its options was
        given, or a target looks like `pytorchjob/NAME`). Used when --provider is not given."""
        return any(config.options.get(o.key) not in (None, (), False) for o in cls.options)

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities

    @abstractmethod
    def discover(self) -> Discovery:
        """Find the targets (and, where known, their ranks) the user's spec names.

        Return targets that are not running yet with `running=False`. Raise NotFoundError when the
        spec matches nothing at all; say in `where` and in the message where you looked.
        """

    @abstractmethod
    def open_stream(self, target: Target, port: int, timeout: float) -> Stream:
        """Open one byte stream to `port` on `target` (on the target's loopback, as the rank sees it).

        Called once per accepted local client connection. Raise UpstreamError(retryable=True) for
        conditions that may pass (nothing listening yet, transport reconnecting), retryable=False
        for ones that will not (forbidden, credentials expired).
        """

    def probe(self, target: Target) -> ProbeResult | None:
        """Out-of-band readiness of `target` (markers and listening sockets), or None if unknown.

        Must never connect to a debug port. Providers with an exec channel run
        `dbgfwd.rank.markers.probe_command()` there and return `parse_probe_output(stdout)`.
        """
        return None

    def run(self, target: Target, command: str, timeout: float, stdin: bytes | None = None) -> str:
        """Run a POSIX sh `command` where `target`'s ranks run; its stdout. Providers with Capability.EXEC.

        `stdin` is written to the command's standard input. It may never see end-of-file (the Kubernetes v4
        exec protocol cannot close stdin): a command reads exactly as many bytes as it was told to expect."""
        from dbgfwd.errors import ProviderUnavailable

        raise ProviderUnavailable(f"the {self.name} provider cannot run commands in its targets")

    def exec_targets(self) -> Discovery:
        """The targets `run()` can reach, whether or not ranks are known there yet (for `attach --inject`,
        which looks for ranks that have no marker). Default: the running targets discover() finds."""
        found = self.discover()
        return Discovery(tuple(t for t in found.targets if t.running), found.where)

    def keepalive(self) -> None:
        """Keep idle transports alive (a rank stopped at a breakpoint sends nothing for hours)."""

    def close(self) -> None:
        """Release every transport and session (terminate SSM sessions, close SSH clients)."""
