"""Every Linux-only mechanism dbgfwd uses, in one place.

On Linux the kernel says which user owns a socket (sock_diag for one socket, /proc/net/tcp{,6} for all), /proc
which process started when, and a pidfd when a watched process ends. Elsewhere (macOS, Windows laptops running
attach/status/gen-launch) these answer None and what depends on them is degraded, as docs/security.md says:
forwards cannot tell which local user connected (they rely on binding 127.0.0.1 only), and a session's liveness is
judged by its pid alone.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import socket

LINUX = sys.platform.startswith("linux")
_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def tcp_table() -> str | None:
    """The kernel's TCP socket tables as text, or None where there are none."""
    parts = []
    for path in _TABLES:
        try:
            parts.append(Path(path).read_text())
        except OSError:
            pass
    return "\n".join(parts) if parts else None


def _normal(ip: str) -> str:
    return ip[7:] if ip.startswith("::ffff:") else ip  # v4-mapped addresses as the v4 table names them


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the local process at the other end of an accepted loopback connection, or None when
    that cannot be told (not Linux, or the peer is not on this machine)."""
    import socket

    from dbgfwd.rank.markers import parse_tcp_table

    try:
        peer, mine = sock.getpeername()[:2], sock.getsockname()[:2]
    except OSError:
        return None
    if LINUX:
        family = sock.family
        if family == socket.AF_INET6 and peer[0].startswith("::ffff:") and mine[0].startswith("::ffff:"):
            family, peer, mine = socket.AF_INET, (peer[0][7:], peer[1]), (mine[0][7:], mine[1])  # a v4 client
        uid = _sock_diag_uid(family, peer, mine)
        if uid is not None:
            return uid
    table = tcp_table()
    if table is None:
        return None
    # Only the lines whose ports are the connection's are decoded: the table holds every socket of the machine
    # (thousands with many ranks), and a storm of debuggers connecting at once asks this once each.
    ports = (f":{peer[1]:04X}", f":{mine[1]:04X}")
    candidates = "\n".join(line for line in table.splitlines()
                           if ports[0] in line and ports[1] in line)
    for s in parse_tcp_table(candidates):
        if (s.local_port == peer[1] and s.remote_port == mine[1] and _normal(s.local_ip) == _normal(peer[0])
                and _normal(s.remote_ip) == _normal(mine[0])):
            return s.uid
    return None


_NETLINK_SOCK_DIAG, _SOCK_DIAG_BY_FAMILY = 4, 20
_NO_COOKIE = 0xFFFFFFFF


def _sock_diag_uid(family: int, peer: tuple, mine: tuple) -> int | None:
    """The owner of the peer's socket, asked of the kernel for that one socket (sock_diag, as `ss` does):
    reading /proc/net/tcp formats every socket of the machine, ~20 ms at a few thousand sockets, for each
    debugger that connects. None when the kernel does not answer this way (then the table is read)."""
    import socket
    import struct

    try:
        src, dst = socket.inet_pton(family, peer[0]), socket.inet_pton(family, mine[0])
        sockid = struct.pack("!HH16s16s", peer[1], mine[1], src.ljust(16, b"\0"), dst.ljust(16, b"\0")) + \
            struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE)
        req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
        header = struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY, 1, 1, 0)  # NLM_F_REQUEST
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            nl.send(header + req)
            reply = nl.recv(8192)
    except (OSError, ValueError, AttributeError):
        return None
    if len(reply) < 16 + 72:
        return None
    length, kind = struct.unpack_from("=IH", reply)
    if kind != _SOCK_DIAG_BY_FAMILY or length < 16 + 72:
        return None  # NLMSG_ERROR: no such socket here (not on this machine, or gone)
    answered = struct.unpack_from("!HH16s16s", reply, 16 + 4)
    if answered != struct.unpack("!HH16s16s", sockid[:36]):
        return None
    return struct.unpack_from("=I", reply, 16 + 64)[0]


_NLM_F_DUMP, _NLMSG_DONE, _NLMSG_ERROR = 0x300, 3, 2
_TCP_LISTEN = 10


def listening_sockets() -> tuple[frozenset[tuple[str, int]], dict[int, frozenset[int]]] | None:
    """(ip, port) of every listening TCP socket of this network namespace, and port -> uids of their owners;
    None where the kernel cannot be asked this way (not Linux: read `tcp_table` instead).

    Asked of the kernel through sock_diag for listeners only, as `ss -lt` does: /proc/net/tcp formats every
    socket of the machine as text, ~25 ms at two thousand (an idle attach of 1024 local ranks read it every
    few seconds)."""
    if not LINUX:
        return None
    import socket
    import struct

    listening: set[tuple[str, int]] = set()
    owners: dict[int, set[int]] = {}
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
                req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN) + bytes(48)
                nl.send(struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY, 1 | _NLM_F_DUMP, seq, 0) + req)
                done = False
                while not done:
                    data = nl.recv(1 << 16)
                    off = 0
                    while off + 16 <= len(data):
                        length, kind = struct.unpack_from("=IH", data, off)
                        if length < 16:
                            return None
                        if kind == _NLMSG_DONE:
                            done = True
                            break
                        if kind == _NLMSG_ERROR or length < 16 + 72:
                            return None
                        body = off + 16
                        port = struct.unpack_from("!H", data, body + 4)[0]
                        raw = data[body + 8:body + 24]
                        ip = socket.inet_ntop(family, raw[:4] if family == socket.AF_INET else raw)
                        listening.add((ip, port))
                        owners.setdefault(port, set()).add(struct.unpack_from("=I", data, body + 64)[0])
                        off += (length + 3) & ~3
    except (OSError, ValueError, AttributeError):
        return None
    return frozenset(listening), {port: frozenset(uids) for port, uids in owners.items()}


def process_start(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot), to tell a process from a later one with a reused pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def process_running(pid: int) -> bool:
    """`pid` exists and is not a zombie (killed, not yet reaped by its parent: its /proc entry stays until
    then, but it will never run or answer again). Outside Linux a zombie counts as running.

    On Linux a process seen running is then watched through a pidfd, which turns readable the moment that very
    process ends (zombie included) and never follows its pid to a later process: an idle attach of 1024 local
    ranks asks this of every rank every few seconds, and a poll costs a fraction of reading /proc/PID/stat."""
    if LINUX:
        watched = _pidfd_says(pid)
        if watched is not None:
            return watched
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat_line = fh.read(512)
        except OSError:
            return False
        fields = stat_line.rsplit(b")", 1)[-1].split()
        running = not fields or fields[0] not in (b"Z", b"X")
        if running:
            _watch(pid)
        return running
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: it exists
    except OSError:
        return False
    return True


_PIDFDS: dict[int, int] = {}  # pid -> pidfd of the process seen running under that pid
_PIDS: dict[int, int] = {}  # pidfd -> pid
_PIDFDS_MAX = 4096
_pidfd_lock = threading.Lock()
_watched = None  # one poll object holding every pidfd: a sweep asks the kernel which ended, in one call


def _pidfd_says(pid: int) -> bool | None:
    """True while the watched process runs; None when it is not watched, or has ended (the pidfd is then
    dropped, and /proc decides: the pid may be a new process by now)."""
    import select

    with _pidfd_lock:
        fd = _PIDFDS.get(pid)
        if fd is None:
            return None
        poller = select.poll()  # not select(): at 1024 ranks the descriptors are past FD_SETSIZE
        poller.register(fd, select.POLLIN)
        if not poller.poll(0):
            return True
        _drop(fd)
    return None


def _watch(pid: int) -> None:
    global _watched
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None or pid <= 0:
        return
    import select

    with _pidfd_lock:
        if pid in _PIDFDS:
            return
        _forget_ended()  # a new process (a rank restarted): the one it replaced may never be asked about again
        if len(_PIDFDS) >= _PIDFDS_MAX:
            return
        try:
            fd = pidfd_open(pid)
        except OSError:  # ended since, or pidfds refused (old kernel, seccomp): /proc is read each time
            return
        if _watched is None:
            _watched = select.poll()
        _watched.register(fd, select.POLLIN)
        _PIDFDS[pid], _PIDS[fd] = fd, pid


def _forget_ended() -> None:
    """Close the pidfds of processes that have ended. Caller holds _pidfd_lock. The poll object is kept with
    every pidfd in it: building one for each sweep cost a registration per watched process, and the first look
    at 1024 ranks (1024 new processes, a sweep each) was quadratic, ~0.3 s."""
    if _watched is not None and _PIDFDS:
        for fd, _ in _watched.poll(0):
            _drop(fd)


def _drop(fd: int) -> None:
    """Stop watching through `fd` (caller holds _pidfd_lock): out of the poll object before it is closed, so
    the number, reused by a later pidfd, is never polled as this one."""
    if _watched is not None:
        try:
            _watched.unregister(fd)
        except KeyError:
            pass
    pid = _PIDS.pop(fd, None)
    if pid is not None:
        _PIDFDS.pop(pid, None)
    os.close(fd)


def try_lock(fd: int, exclusive: bool = True) -> bool:
    """Take an advisory lock on open file `fd` without waiting: True if taken, False if another process
    holds it. The lock dies with the process that holds it (flock on POSIX, a byte-range lock on Windows)."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def unlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


def peer_hung_up(sock: socket.socket) -> bool | None:
    """Whether the peer of connected `sock` has shut down its sending side, even with unread bytes still
    buffered (a client that sent a request and left). Linux tells this with POLLRDHUP; elsewhere None
    (unknown: only an empty read says so, once the buffered bytes are consumed)."""
    import select

    rdhup = getattr(select, "POLLRDHUP", None)
    if rdhup is None or not hasattr(select, "poll"):
        return None
    poller = select.poll()
    poller.register(sock.fileno(), rdhup | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(0))


# What one forwarded rank can hold open at once: its listener, a client with its upstream, and for a local rank
# the pidfd watching its process.
FDS_PER_RANK = 4
_FDS_SPARE = 256  # the job session, probes, provider connections, files being written


def open_files_limit(ranks: int) -> tuple[int | None, int | None]:
    """Make room for `ranks` forwards: raise this process's soft limit on open files towards its hard limit
    (the kernel lets any process do so). Desktop defaults are far below what many ranks need (Linux 1024,
    macOS 256): without this, an attach of a few hundred ranks failed to listen ("Too many open files").
    Returns (soft limit now, what `ranks` want); (None, None) where there is no such limit (Windows)."""
    try:
        import resource
    except ImportError:
        return None, None
    wanted = ranks * FDS_PER_RANK + _FDS_SPARE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft, wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    # macOS refuses a soft limit above kern.maxfilesperproc even when the hard limit is unlimited
    for value in (target, min(target, 10240)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (value, hard))
            return value, wanted
        except (ValueError, OSError):
            continue
    return soft, wanted
