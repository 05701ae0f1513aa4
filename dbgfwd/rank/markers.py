"""Rank readiness markers: the out-of-band signal that a rank's debugpy is listening.

The rank launcher (`dbgfwd-rank`) writes one JSON file per rank process *after* `debugpy.listen`
returned, and removes it on exit. Providers read them without ever touching the debug port:
the local provider reads the directory, remote providers run `probe_command()` through their exec
channel (ssh exec, pod exec) and hand its output to `parse_probe_output()`.

Marker path: `<runtime dir>/rank-<pid>.json`; the runtime dir is `$DBGFWD_RUNTIME_DIR`, else
`$XDG_RUNTIME_DIR/dbgfwd` (where the session has one), else `/tmp/dbgfwd-<uid>` (mode 0700). The pid in
the file name lets a shell check liveness via /proc.

Other local users are adversaries (login nodes, shared GPU boxes): a runtime directory that is a link,
or not the user's own, is refused; a marker is read only if it is a regular file of the user's, of
bounded size, opened without following links or blocking; a listener counts for a rank only if the
user's uid owns it (the socket tables say whose each socket is).
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import socket
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from dbgfwd import envvars
from dbgfwd.errors import UntrustedPathError
from dbgfwd.fsutil import atomic_write_text

MARKER_VERSION = 1
MARKER_GLOB = "rank-*.json"
MARKER_MAX_BYTES = 64 * 1024
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
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return None


def _opt_int(value) -> int | None:
    return None if value is None else int(value)


def runtime_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    explicit = env.get(envvars.RUNTIME_DIR)
    if explicit:
        return Path(explicit)
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg and _own_private_dir(Path(xdg)):
        return Path(xdg) / "dbgfwd"
    return Path("/tmp") / f"dbgfwd-{os.getuid()}"


def _own_private_dir(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def check_runtime_dir(path: Path) -> bool:
    """True if `path` is the user's own directory (tightened to 0700 if it was looser); False if it does not
    exist. UntrustedPathError for a link, a non-directory, or a directory of another user."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    hint = f"remove it, or set {envvars.RUNTIME_DIR} to a directory only you can write"
    if stat.S_ISLNK(st.st_mode):
        raise UntrustedPathError(f"runtime directory {path} is a symbolic link", hint=hint)
    if not stat.S_ISDIR(st.st_mode):
        raise UntrustedPathError(f"runtime directory {path} is not a directory", hint=hint)
    if st.st_uid != os.getuid():
        raise UntrustedPathError(f"runtime directory {path} belongs to uid {st.st_uid}, not to you (uid "
                                 f"{os.getuid()}): whoever owns it could point your debugger anywhere", hint=hint)
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)  # ours: only what is in it is suspect, and every marker is checked on reading
    return True


def ensure_runtime_dir(path: Path) -> Path:
    """Create the runtime directory (0700) if needed; refuse one the user does not own (see check_runtime_dir)."""
    path = Path(path)
    if not check_runtime_dir(path):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # made in between (another rank of this job): checked below
        check_runtime_dir(path)
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


def pid_alive(pid: int) -> bool:
    """The process runs (a zombie does not; see platform.process_running)."""
    from dbgfwd.platform import process_running

    return process_running(pid)


def read_marker_file(path: Path) -> Marker | None:
    """One marker, trusted only if it is a regular file of this user's, read without following a link or
    blocking (a FIFO named like a marker), and no larger than MARKER_MAX_BYTES. None otherwise."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size > MARKER_MAX_BYTES:
            return None
        data = os.read(fd, MARKER_MAX_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        return Marker.from_json(data.decode("utf-8"))
    except ValueError:  # not UTF-8
        return None


def read_markers(directory: Path | None = None, include_dead: bool = False) -> list[Marker]:
    """Markers in `directory` (default: this user's runtime dir) whose process is alive.

    UntrustedPathError when the directory is not the user's own (see check_runtime_dir).
    Markers are written by rename only, so a directory that did not change since the last read holds the
    same markers: they are read again only when it changed (an idle attach of 1024 ranks re-read 1024 files
    every few seconds). Whether each one's process lives is checked on every call."""
    directory = Path(directory or runtime_dir())
    if not check_runtime_dir(directory):
        return []
    key, found = _dir_key(directory), None
    cached = _MARKER_CACHE.get(str(directory))
    if key is not None and cached is not None and cached[0] == key:
        found = cached[1]
    if found is None:
        found = _scan_markers(directory)
        # A change within the file system's timestamp granularity of the scan could leave the directory's
        # times as they were: trust them only once the directory has been quiet for a while.
        if key is not None and time.time() - key[1] / 1e9 > _QUIET_SECONDS:
            _MARKER_CACHE[str(directory)] = (key, found)
        else:
            _MARKER_CACHE.pop(str(directory), None)
    return [m for m in found if include_dead or pid_alive(m.pid)]


_MARKER_CACHE: dict[str, tuple[tuple, list[Marker]]] = {}
_QUIET_SECONDS = 2.0


def _dir_key(directory: Path) -> tuple | None:
    try:
        st = os.stat(directory)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink, st.st_size)


def _scan_markers(directory: Path) -> list[Marker]:
    try:
        paths = sorted(directory.glob(MARKER_GLOB))
    except OSError:
        return []
    out = [m for m in map(read_marker_file, paths) if m is not None]
    return sorted(out, key=lambda m: (m.rank, m.local_rank))


# ---- reading markers and listening sockets on another machine, through an exec channel ----

@dataclass(frozen=True)
class ProbeResult:
    """What an out-of-band probe saw on one target."""

    markers: tuple[Marker, ...] = ()  # live markers of the probing user only
    listening: frozenset[tuple[str, int]] = field(default_factory=frozenset)  # (ip, port) in LISTEN
    tcp_known: bool = False  # False when /proc/net/tcp could not be read
    owners: Mapping[int, frozenset[int]] = field(default_factory=dict)  # port -> uids of its listeners
    uid: int | None = None  # the probing user (the ranks' user); None: unknown, ownership not checked

    def is_listening(self, port: int) -> bool:
        return port in self._listening_ports

    @functools.cached_property
    def _listening_ports(self) -> frozenset[int]:  # one set per probe, not a scan per rank (1024 ranks)
        return frozenset(p for _, p in self.listening)

    def port_ready(self, port: int) -> bool:
        """Ready = the user's own process listens on the port (when we could see sockets), else a live marker
        says so. A port someone else listens on (a squatter after the rank died) is not ready."""
        if self.tcp_known:
            if not self.is_listening(port):
                return False
            return self.uid is None or port not in self.owners or self.uid in self.owners[port]
        return any(m.port == port for m in self.markers)

    def foreign_listener(self, port: int) -> int | None:
        """The uid of another user listening on `port`, if that is all that listens there."""
        uids = self.owners.get(port, frozenset())
        if self.uid is None or not uids or self.uid in uids:
            return None
        return min(uids)


_SECTION_UID = "--dbgfwd-uid--"


def probe_command(environ_dir: str | None = None) -> str:
    """A POSIX sh command printing the user's live markers, its uid and /proc/net/tcp{,6}; parse with
    parse_probe_output.

    It reads only the connecting user's own directories (`$DBGFWD_RUNTIME_DIR` as set on the remote side,
    `$XDG_RUNTIME_DIR/dbgfwd`, `/run/user/<uid>/dbgfwd`, `/tmp/dbgfwd-<uid>`), and in them only regular files
    that user owns, named with a numeric pid that is alive: another user's marker never reaches dbgfwd.
    """
    dirs = shlex.quote(environ_dir) if environ_dir else \
        ('"${DBGFWD_RUNTIME_DIR:-/nonexistent}" "${XDG_RUNTIME_DIR:-/nonexistent}/dbgfwd" '
         '"/run/user/$(id -u)/dbgfwd" "/tmp/dbgfwd-$(id -u)"')  # /run/user: where XDG_RUNTIME_DIR usually is,
    # for a rank whose session had it when the probe's exec channel does not
    # Everything is gathered first and printed in one write: an exec stream carries each write of the
    # command as a message of its own (dozens per probe otherwise), and probes run all the time.
    return (
        f"out=$(for d in {dirs}; do [ -d \"$d\" ] && [ ! -L \"$d\" ] && [ -O \"$d\" ] || continue; "
        "for f in \"$d\"/rank-*.json; do [ -f \"$f\" ] && [ ! -L \"$f\" ] && [ -O \"$f\" ] || continue; "
        "p=${f##*/rank-}; p=${p%.json}; case $p in ''|*[!0-9]*) continue;; esac; [ -d /proc/$p ] || continue; "
        f"echo '{_SECTION_MARKER}'; head -c {MARKER_MAX_BYTES} \"$f\"; echo; done; done; "
        f"echo '{_SECTION_UID}'; id -u; "
        f"echo '{_SECTION_TCP}'; cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; echo '{_SECTION_END}'); "
        "printf '%s\\n' \"$out\""
    )


@dataclass(frozen=True)
class TcpSocket:
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: str  # hex as the kernel writes it: "0A" LISTEN, "01" ESTABLISHED
    uid: int
    inode: int = 0


def parse_tcp_table(text: str) -> list[TcpSocket]:
    """Every socket in /proc/net/tcp or tcp6 text (lines that do not parse are skipped)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8 or ":" not in parts[1] or ":" not in parts[2]:
            continue
        try:
            (lip, lport), (rip, rport) = (p.rsplit(":", 1) for p in parts[1:3])
            out.append(TcpSocket(_decode_ip(lip), int(lport, 16), _decode_ip(rip), int(rport, 16), parts[3],
                                 int(parts[7]), int(parts[9]) if len(parts) > 9 else 0))
        except ValueError:
            continue
    return out


def parse_proc_net_tcp(text: str) -> frozenset[tuple[str, int]]:
    """(ip, port) of every LISTEN socket in /proc/net/tcp or tcp6 text."""
    return listening_sockets(text)[0]


def listener_owners(text: str) -> dict[int, frozenset[int]]:
    """port -> uids of the LISTEN sockets on it."""
    return listening_sockets(text)[1]


def listening_sockets(text: str) -> tuple[frozenset[tuple[str, int]], dict[int, frozenset[int]]]:
    """(ip, port) of every LISTEN socket, and port -> uids of its listeners, in one pass over the table.

    This runs on every readiness probe of an idle attach, over a table that holds each rank's listener,
    each forward's listener and every connection: only LISTEN lines are decoded, and each distinct address
    once."""
    listening: set[tuple[str, int]] = set()
    owners: dict[int, set[int]] = {}
    for line in text.splitlines():
        parts = line.split(None, 8)
        if len(parts) < 8 or parts[3] != "0A":
            continue
        lip, _, lport = parts[1].rpartition(":")
        try:
            port, uid = int(lport, 16), int(parts[7])
            listening.add((_decode_ip(lip), port))
        except ValueError:
            continue
        owners.setdefault(port, set()).add(uid)
    return frozenset(listening), {port: frozenset(uids) for port, uids in owners.items()}


@functools.lru_cache(maxsize=256)
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
    uid = None

    def flush():
        if section == _SECTION_MARKER and buf:
            m = Marker.from_json("\n".join(buf))
            if m is not None:
                markers.append(m)

    for line in text.splitlines():
        stripped = line.strip()
        if stripped in (_SECTION_MARKER, _SECTION_TCP, _SECTION_UID, _SECTION_END):
            flush()
            buf = []
            section = stripped
            if stripped == _SECTION_TCP:
                tcp_seen = True
            continue
        if section == _SECTION_MARKER:
            buf.append(line)
        elif section == _SECTION_UID and stripped.isdigit():
            uid = int(stripped)
        elif section == _SECTION_TCP:
            tcp_lines.append(line)
    flush()
    table = "\n".join(tcp_lines)
    listening, owners = listening_sockets(table)
    tcp_known = tcp_seen and any(line.strip().startswith("sl") for line in tcp_lines)
    unique = {m.pid: m for m in markers}  # one directory can be reached by two names (XDG and /run/user)
    return ProbeResult(markers=tuple(sorted(unique.values(), key=lambda m: (m.rank, m.local_rank))),
                       listening=listening, tcp_known=tcp_known, owners=owners, uid=uid)


def local_probe(directory: Path | None = None, sockets: bool = True) -> ProbeResult:
    """The same probe, run on this machine without a shell. sockets=False: the markers only (the socket table
    is the costly part: the kernel formats every socket of the machine)."""
    from dbgfwd import platform

    if not sockets:
        return ProbeResult(markers=tuple(read_markers(directory)), uid=os.getuid())
    asked = platform.listening_sockets()  # the kernel's listeners only, where it can be asked (Linux)
    if asked is not None:
        listening, owners = asked
        known = True
    else:
        table = platform.tcp_table()
        listening, owners = listening_sockets(table or "")
        known = table is not None
    return ProbeResult(markers=tuple(read_markers(directory)), listening=listening, tcp_known=known,
                       owners=owners, uid=os.getuid())
