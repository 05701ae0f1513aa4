"""`--provider ssh`: ranks on plain hosts reached over SSH (bare metal, Slurm allocations, cloud VMs)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dbgfwd.providers.ssh.targets as targets_mod
from dbgfwd.errors import BadFileError, DbgfwdError, NotFoundPathError, UnreachableError, UsageError
from dbgfwd.plan.layout import marker_ranks, node_ranks, of_job
from dbgfwd.providers.base import Availability, Capability, Discovery, Provider, ProviderConfig, Stream, Target
from dbgfwd.providers.ssh.options import OPTIONS, TITLE
from dbgfwd.providers.ssh.targets import HostSpec
from dbgfwd.rank.markers import ProbeResult, parse_probe_output, probe_command

log = logging.getLogger("dbgfwd.ssh")

PROBE_TIMEOUT = 10.0
# discover() right after a probe() of the same host reuses its result instead of running another.
_PROBE_REUSE = 1.0
_MAX_PARALLEL_CONNECTS = 32
BACKENDS = ("paramiko", "openssh")


class SshProvider(Provider):
    name = "ssh"
    title = TITLE
    summary = "ranks on hosts reached with SSH ([user@]host[:port], --hostfile, --nodelist)"
    capabilities = frozenset({Capability.OUT_OF_BAND_READINESS, Capability.REDISCOVERY, Capability.EXEC})
    options = OPTIONS

    def __init__(self, config: ProviderConfig):
        super().__init__(config)
        self._specs = host_specs(config)
        for key in config.opt("identity", ()):
            if not Path(key).expanduser().is_file():
                raise NotFoundPathError(f"--identity {key}: no such key file",
                                        hint="give the path of your private key (as for ssh -i)")
        self._backend = str(config.opt("ssh_backend", "paramiko") or "paramiko").lower()
        if self._backend not in BACKENDS:
            raise UsageError(f"--ssh-backend {self._backend}: unknown backend",
                             hint=f"use one of: {', '.join(BACKENDS)}")
        self._control_dir: str | None = None
        self._settings = None  # resolved lazily: reading ssh config can fail, and that is discover()'s job
        self._conns: dict = {}
        self._conns_lock = threading.Lock()
        self._first_discovery = True
        self._last_probe: dict[str, tuple[float, ProbeResult]] = {}  # host key -> (when, result)
        self._reconnecting: set[str] = set()

    @classmethod
    def availability(cls) -> Availability:
        try:
            import paramiko  # noqa: F401
        except ImportError:
            return Availability(False, "paramiko is not installed: pip install paramiko")
        return Availability(True)

    @classmethod
    def claims(cls, config: ProviderConfig) -> bool:
        return super().claims(config) or (not config.targets and bool(os.environ.get(
            targets_mod.SLURM_NODELIST_ENV)))

    # ---- connections ----

    def _connections(self) -> dict:
        from dbgfwd.providers.ssh.settings import Defaults

        with self._conns_lock:
            if self._settings is None:
                opt = self.config.opt
                defaults = Defaults(
                    config_path=str(opt("ssh_config")) if opt("ssh_config") else None,
                    user=opt("ssh_user"),
                    identity_files=tuple(str(p) for p in opt("identity", ())),
                    accept_new_host_keys=bool(opt("insecure_accept_new_host_keys", False)),
                    connect_timeout=float(opt("ssh_timeout", 10.0)),
                )
                if self._backend == "openssh":
                    settings = self._openssh_connections(defaults, opt("ssh_timeout") is not None)
                else:
                    settings = self._paramiko_connections(defaults)
                if defaults.accept_new_host_keys:
                    _warn("--insecure-accept-new-host-keys: host keys missing from known_hosts are "
                          "accepted without verification; anyone on the path can impersonate those hosts")
                self._settings = settings
                # The engine's keepalive cadence follows the tightest ServerAliveInterval.
                self.keepalive_interval = min(s.alive_interval for s in settings)
            return self._conns

    def _paramiko_connections(self, defaults) -> list:
        from dbgfwd.providers.ssh.connection import HostConnection
        from dbgfwd.providers.ssh.settings import resolve_all

        resolved = resolve_all(self._specs, defaults)
        for spec, settings in zip(self._specs, resolved):
            self._conns[spec.key] = HostConnection(spec.key, settings, warn=_warn)
        return resolved

    def _openssh_connections(self, defaults, timeout_given: bool) -> list:
        from dbgfwd.providers.ssh import openssh

        ssh = openssh.ssh_binary()
        # Without --ssh-timeout, ssh's own ConnectTimeout (from the user's config) applies.
        resolved = [openssh.resolve(spec, defaults, ssh, override_timeout=timeout_given) for spec in self._specs]
        self._control_dir = openssh.control_dir()
        interactive = sys.stdin is not None and sys.stdin.isatty()
        for index, (spec, settings) in enumerate(zip(self._specs, resolved)):
            self._conns[spec.key] = openssh.OpenSshConnection(spec.key, settings, self._control_dir, index, ssh,
                                                              interactive=interactive, warn=_warn)
        return resolved

    def connection(self, target: Target):
        return self._connections()[target.key]

    # ---- Provider interface ----

    def discover(self) -> Discovery:
        """Probe every host (in parallel). Only the first call waits for connections; later calls
        (the engine rediscovers every few seconds) report hosts whose transport is down as not
        running and reconnect them in the background, so one dead host never stalls the others."""
        conns = self._connections()
        first, self._first_discovery = self._first_discovery, False
        workers = min(_MAX_PARALLEL_CONNECTS, len(self._specs))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dbgfwd-ssh-discover") as pool:
            results = list(pool.map(lambda s: self._discover_host(conns[s.key], first), self._specs))
        where = f"on ssh hosts {', '.join(s.key for s in self._specs[:5])}" + ("..." if len(self._specs) > 5 else "")
        errors = [r for r in results if isinstance(r, DbgfwdError)]
        if first and len(errors) == len(results):
            # Nothing reachable at all: a plain error (and exit code) beats a table of waiting hosts.
            raise errors[0]
        rpn = self.config.ranks_per_node
        slotted = any(s.slots for s in self._specs)
        out, rank_base = [], 0
        for index, (spec, result) in enumerate(zip(self._specs, results)):
            count = rpn or spec.slots
            base = index * rpn if rpn else (rank_base if slotted else None)
            rank_base += spec.slots or 1
            known = self._last_probe.get(spec.key)
            out.append(_target(spec, index, base, count, self.config.base_port, result,
                               known[1] if known else None))
        return Discovery(targets=tuple(out), where=where)

    def _discover_host(self, conn, first: bool) -> ProbeResult | DbgfwdError:
        if not first and not conn.connected:
            self._reconnect_in_background(conn)
            return conn.last_error or UnreachableError(f"ssh: reconnecting to {conn.settings.label}")
        known = self._last_probe.get(conn.key)
        if known and time.monotonic() - known[0] < _PROBE_REUSE:
            return known[1]
        return self._run_probe(conn)

    def _run_probe(self, conn) -> ProbeResult | DbgfwdError:
        try:
            _status, text = conn.run(probe_command(), timeout=max(PROBE_TIMEOUT, conn.settings.connect_timeout))
        except DbgfwdError as exc:
            return exc
        result = parse_probe_output(text)
        self._last_probe[conn.key] = (time.monotonic(), result)
        return result

    def _reconnect_in_background(self, conn) -> None:
        with self._conns_lock:
            if conn.key in self._reconnecting or time.monotonic() < conn.next_attempt_at():
                return
            self._reconnecting.add(conn.key)

        def run():
            try:
                conn.transport()
            except DbgfwdError as exc:
                log.debug("ssh: reconnect to %s failed: %s", conn.settings.alias, exc)
            finally:
                with self._conns_lock:
                    self._reconnecting.discard(conn.key)

        threading.Thread(target=run, daemon=True, name=f"dbgfwd-ssh-reconnect-{conn.settings.alias}").start()

    def run(self, target: Target, command: str, timeout: float, stdin: bytes | None = None) -> str:
        _status, text = self.connection(target).run(command, timeout, stdin=stdin)
        return text

    def probe(self, target: Target) -> ProbeResult | None:
        conn = self.connection(target)
        if not conn.connected:
            self._reconnect_in_background(conn)  # never block the engine's monitor on a dead host
            return None
        result = self._run_probe(conn)
        return None if isinstance(result, DbgfwdError) else result

    def open_stream(self, target: Target, port: int, timeout: float) -> Stream:
        return self.connection(target).open_channel(port, timeout)

    def keepalive(self) -> None:
        # Each connection's watchdog sends the keepalives and notices dead transports; here dead
        # ones are brought back in the background so an idle forward is usable when a client comes.
        for conn in list(self._conns.values()):
            if not conn.connected:
                self._reconnect_in_background(conn)

    def close(self) -> None:
        for conn in list(self._conns.values()):
            conn.close()
        if self._control_dir:
            import shutil

            shutil.rmtree(self._control_dir, ignore_errors=True)


def _warn(text: str) -> None:
    log.warning(text)
    if not logging.getLogger().handlers and not log.handlers:
        print(text, file=sys.stderr)


def _target(spec: HostSpec, index: int, base: int | None, count: int | None, base_port: int,
            result: ProbeResult | DbgfwdError, known: ProbeResult | None) -> Target:
    if isinstance(result, DbgfwdError):
        detail = {"error": result.message}
        if result.hint:
            detail["hint"] = result.hint
        if count and base is not None:
            ranks = node_ranks(base, count, base_port)
        else:  # keep the ranks last seen there, so their forwards stay mapped while the host is away
            ranks = marker_ranks(known.markers if known else (), base_port)
        return Target(key=spec.key, name=spec.host, node_index=index, rank_base=base, ranks=ranks,
                      running=False, status=result.message, detail=detail, handle=spec.key)
    markers = of_job(result.markers, base_port)
    if count and base is not None:
        ranks = node_ranks(base, count, base_port)
    else:
        ranks = marker_ranks(markers)
        if ranks and base is None:
            base = min(m.rank - m.local_rank for m in markers)
    root = next((m.cwd for m in markers if m.cwd), None)
    status = "running" if ranks else "waiting for ranks"
    detail = {"ranks": str(len(markers))} if markers else {}
    return Target(key=spec.key, name=spec.host, node_index=index, rank_base=base, ranks=ranks, running=True,
                  status=status, remote_root=root, detail=detail, handle=spec.key)


def host_specs(config: ProviderConfig) -> list[HostSpec]:
    """Hosts from positional targets, --hostfile and --nodelist (or $SLURM_JOB_NODELIST), in that order."""
    specs: list[HostSpec] = [targets_mod.parse_host_spec(t) for t in config.targets]
    hostfile = config.opt("hostfile")
    if hostfile:
        path = Path(hostfile)
        try:
            text = path.read_text()
        except OSError as exc:
            raise BadFileError(path, f"cannot read hostfile ({exc.strerror})", hint="fix the --hostfile path") \
                from None
        specs += targets_mod.parse_hostfile(text, path)
    nodelist = config.opt("nodelist")
    source = "--nodelist"
    if not nodelist and not specs and os.environ.get(targets_mod.SLURM_NODELIST_ENV):
        nodelist, source = os.environ[targets_mod.SLURM_NODELIST_ENV], f"${targets_mod.SLURM_NODELIST_ENV}"
    if nodelist:
        specs += [HostSpec(h) for h in targets_mod.expand_nodelist(nodelist, source)]
    if not specs:
        raise UsageError("no SSH hosts given", hint="name hosts ([user@]host[:port]), or use --hostfile or --nodelist")
    seen: dict[str, HostSpec] = {}
    for s in specs:
        if s.key in seen:
            raise UsageError(f"host {s.key} is named twice", hint="list each host once (use slots=N for more ranks)")
        seen[s.key] = s
    return specs


__all__ = ["SshProvider", "host_specs"]
