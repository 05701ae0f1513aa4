"""Rank readiness markers: the out-of-band signal that a rank's debugpy is listening.

The rank launcher (`dbgfwd-rank`) writes one JSON file per rank process *after* `debugpy.listen`
returned, and removes it on exit. Providers read them without ever touching the debug port:
the local provider reads the directory, remote providers run `probe_command()` through their exec
channel (ssh exec, pod exec) and hand its output to `parse_probe_output()`.

Marker path: `<runtime dir>/rank-<pid>.json`; the runtime dir is `$DBGFWD_RUNTIME_DIR` or
`/tmp/dbgfwd-<uid>` (mode 0700). The pid in the file name lets a shell check liveness via /proc.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from dbgfwd import envvars
from dbgfwd.fsutil import atomic_write_text

MARKER_VERSION = 1
MARKER_GLOB = "rank-*.json"
_SECTION_MARKER = "--dbgfwd-marker--"
_SECTION_TCP = "--dbgfwd-tcp--"
_SECTION_END = "--dbgfwd-end--"


@dataclass(frozen=True)
class Marker:
    rank: int
    local_rank: int
    port: int
    pid: int
    host: str = "127.0.0.1"  # the address debugpy was bound to
    hostname: str = ""
    world_size: int | None = None
    source: str = "default"  # which rank environment was read (rank.env.RankSource.name)
    cwd: str = ""
    argv: tuple[str, ...] = ()
    started: float = 0.0
    version: int = MARKER_VERSION
    # `dbgfwd stacks`: the signal that makes the rank dump its threads' stacks into stack_file
    # (dbgfwd.rank.stackdump), and the main thread's id as the dump names it. None: no handler.
    stack_signal: int | None = None
    stack_file: str = ""
    main_thread: int | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data["argv"] = list(self.argv)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Marker | None":
        """Parse one marker; None for anything that is not a valid marker (never raises)."""
        try:
            data = json.loads(text)
            return cls(
                rank=int(data["rank"]), local_rank=int(data["local_rank"]), port=int(data["port"]),
                pid=int(data["pid"]), host=str(data.get("host", "127.0.0.1")),
                hostname=str(data.get("hostname", "")),
                world_size=None if data.get("world_size") is None else int(data["world_size"]),
                source=str(data.get("source", "default")), cwd=str(data.get("cwd", "")),
                argv=tuple(str(a) for a in data.get("argv", ())), started=float(data.get("started", 0.0)),
                version=int(data.get("version", MARKER_VERSION)),
                stack_signal=_opt_int(data.get("stack_signal")), stack_file=str(data.get("stack_file") or ""),
                main_thread=_opt_int(data.get("main_thread")),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def _opt_int(value) -> int | None:
    return None if value is None else int(value)


def runtime_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    explicit = env.get(envvars.RUNTIME_DIR)
    if explicit:
        return Path(explicit)
    return Path("/tmp") / f"dbgfwd-{os.getuid()}"


def ensure_runtime_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.chmod(path, 0o700)
    except PermissionError:
        pass
    return path


def marker_path(directory: Path, pid: int) -> Path:
    return directory / f"rank-{pid}.json"


def write_marker(marker: Marker, directory: Path | None = None) -> Path:
    directory = ensure_runtime_dir(directory or runtime_dir())
    path = marker_path(directory, marker.pid)
    atomic_write_text(path, marker.to_json() + "\n", mode=0o600)
    return path


def new_marker(rank: int, local_rank: int, port: int, host: str, world_size: int | None,
               source: str, argv: Iterable[str], stack=None) -> Marker:
    """This process's marker; `stack` is its dbgfwd.rank.stackdump.Handler, if one is installed."""
    import threading

    return Marker(rank=rank, local_rank=local_rank, port=port, pid=os.getpid(), host=host,
                  hostname=socket.gethostname(), world_size=world_size, source=source,
                  cwd=os.getcwd(), argv=tuple(argv), started=time.time(),
                  stack_signal=stack.signal if stack else None, stack_file=str(stack.path) if stack else "",
                  main_thread=threading.main_thread().ident if stack else None)


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def read_markers(directory: Path | None = None, include_dead: bool = False) -> list[Marker]:
    """Markers in `directory` (default: this user's runtime dir) whose process is alive."""
    directory = directory or runtime_dir()
    out = []
    try:
        paths = sorted(directory.glob(MARKER_GLOB))
    except OSError:
        return []
    for path in paths:
        try:
            marker = Marker.from_json(path.read_text())
        except OSError:
            continue
        if marker is None:
            continue
        if include_dead or _pid_alive(marker.pid):
            out.append(marker)
    return sorted(out, key=lambda m: (m.rank, m.local_rank))


# ---- reading markers and listening sockets on another machine, through an exec channel ----

@dataclass(frozen=True)
class ProbeResult:
    """What an out-of-band probe saw on one target."""

    markers: tuple[Marker, ...] = ()  # live markers only
    listening: frozenset[tuple[str, int]] = field(default_factory=frozenset)  # (ip, port) in LISTEN
    tcp_known: bool = False  # False when /proc/net/tcp could not be read

    def is_listening(self, port: int) -> bool:
        return any(p == port for _, p in self.listening)

    def port_ready(self, port: int) -> bool:
        """Ready = something listens on the port (when we could see sockets), else a live marker says so."""
        if self.tcp_known:
            return self.is_listening(port)
        return any(m.port == port for m in self.markers)


def probe_command(environ_dir: str | None = None) -> str:
    """A POSIX sh command printing live markers and /proc/net/tcp{,6}; parse with parse_probe_output.

    It looks in `$DBGFWD_RUNTIME_DIR` (as set on the remote side) and in every `/tmp/dbgfwd-*` dir,
    so a probe running as another uid than the ranks still finds readable markers.
    """
    dirs = shlex.quote(environ_dir) if environ_dir else '"${DBGFWD_RUNTIME_DIR:-/nonexistent}" /tmp/dbgfwd-*'
    return (
        f"for d in {dirs}; do for f in \"$d\"/rank-*.json; do [ -f \"$f\" ] || continue; "
        "p=${f##*/rank-}; p=${p%.json}; [ -d /proc/$p ] || continue; "
        f"echo '{_SECTION_MARKER}'; cat \"$f\"; echo; done; done; "
        f"echo '{_SECTION_TCP}'; cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; echo '{_SECTION_END}'"
    )


def parse_proc_net_tcp(text: str) -> frozenset[tuple[str, int]]:
    """(ip, port) of every LISTEN socket in /proc/net/tcp or tcp6 text."""
    out = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or ":" not in parts[1] or parts[3] != "0A":
            continue
        addr_hex, port_hex = parts[1].rsplit(":", 1)
        try:
            port = int(port_hex, 16)
            out.add((_decode_ip(addr_hex), port))
        except ValueError:
            continue
    return frozenset(out)


def _decode_ip(addr_hex: str) -> str:
    raw = bytes.fromhex(addr_hex)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # IPv6: four 32-bit words, each in host (little-endian) order
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def parse_probe_output(text: str) -> ProbeResult:
    markers: list[Marker] = []
    tcp_lines: list[str] = []
    section = None
    buf: list[str] = []
    tcp_seen = False

    def flush():
        if section == _SECTION_MARKER and buf:
            m = Marker.from_json("\n".join(buf))
            if m is not None:
                markers.append(m)

    for line in text.splitlines():
        stripped = line.strip()
        if stripped in (_SECTION_MARKER, _SECTION_TCP, _SECTION_END):
            flush()
            buf = []
            section = stripped
            if stripped == _SECTION_TCP:
                tcp_seen = True
            continue
        if section == _SECTION_MARKER:
            buf.append(line)
        elif section == _SECTION_TCP:
            tcp_lines.append(line)
    flush()
    listening = parse_proc_net_tcp("\n".join(tcp_lines))
    tcp_known = tcp_seen and any(line.strip().startswith("sl") for line in tcp_lines)
    return ProbeResult(markers=tuple(sorted(markers, key=lambda m: (m.rank, m.local_rank))),
                       listening=listening, tcp_known=tcp_known)


def local_probe(directory: Path | None = None) -> ProbeResult:
    """The same probe, run on this machine without a shell."""
    text = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            text.append(Path(path).read_text())
        except OSError:
            pass
    return ProbeResult(markers=tuple(read_markers(directory)), listening=parse_proc_net_tcp("\n".join(text)),
                       tcp_known=bool(text))
