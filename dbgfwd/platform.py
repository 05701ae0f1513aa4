"""Every Linux-only mechanism dbgfwd uses, in one place.

On Linux the kernel's socket tables (/proc/net/tcp{,6}) say which user owns each socket and /proc which
process started when. Elsewhere (macOS, Windows laptops running attach/status/gen-launch) these answer
None and what depends on them is degraded, as docs/security.md says: forwards cannot tell which local
user connected (they rely on binding 127.0.0.1 only), and a session's liveness is judged by its pid alone.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path

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
    from dbgfwd.rank.markers import parse_tcp_table

    table = tcp_table()
    if table is None:
        return None
    try:
        peer, mine = sock.getpeername()[:2], sock.getsockname()[:2]
    except OSError:
        return None
    for s in parse_tcp_table(table):
        if (s.local_port == peer[1] and s.remote_port == mine[1] and _normal(s.local_ip) == _normal(peer[0])
                and _normal(s.remote_ip) == _normal(mine[0])):
            return s.uid
    return None


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
_PIDFDS_MAX = 4096
_pidfd_lock = threading.Lock()


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
        del _PIDFDS[pid]
        os.close(fd)
    return None


def _watch(pid: int) -> None:
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None or pid <= 0:
        return
    with _pidfd_lock:
        if pid in _PIDFDS:
            return
        _forget_ended()  # a new process (a rank restarted): the one it replaced may never be asked about again
        if len(_PIDFDS) >= _PIDFDS_MAX:
            return
        try:
            _PIDFDS[pid] = pidfd_open(pid)
        except OSError:  # ended since, or pidfds refused (old kernel, seccomp): /proc is read each time
            pass


def _forget_ended() -> None:
    """Close the pidfds of processes that have ended (one poll for all). Caller holds _pidfd_lock."""
    import select

    if not _PIDFDS:
        return
    poller = select.poll()
    pid_of = {}
    for pid, fd in _PIDFDS.items():
        poller.register(fd, select.POLLIN)
        pid_of[fd] = pid
    for fd, _ in poller.poll(0):
        del _PIDFDS[pid_of[fd]]
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
