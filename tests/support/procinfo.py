"""What a process holds, read from /proc (never by connecting to anything); and ending a process group."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from dbgfwd.rank import markers


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads line for pid {pid}")


def descendants(pid: int) -> list[int]:
    """pid and every process below it (children via /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def listening_addrs(*pids: int) -> set[tuple[str, int]]:
    """(ip, port) of every TCP LISTEN socket owned by any of `pids`."""
    inodes = set()
    for pid in pids:
        inodes |= socket_inodes(pid)
    out = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(path).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:
                out |= markers.parse_proc_net_tcp(f"hdr\n{line}")
    return out


def owners_of_listener(port: int) -> list[int]:
    """Pids holding a LISTEN socket on `port` (e.g. debugpy's adapter, which is not our child)."""
    inodes = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(path).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if socket_inodes(int(entry)) & inodes:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def kill_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGKILL the process group `proc` leads (started with start_new_session) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout)
