"""Where is this rank right now? A stack dump on a signal, written from C, for `dbgfwd stacks`.

A debugger pause cannot show a rank blocked in C (a gloo/NCCL collective, a C extension): pydevd stops
threads only when they run Python bytecode. `faulthandler` can: on the signal, its C handler writes the
Python stack of every thread to a file, whatever the threads are doing, and the rank goes on at once.

The rank keeps `<runtime dir>/stack-<pid>.txt` (0600) open in append mode; `dbgfwd stacks` empties it,
sends the signal and reads what was written (`stack_command` is the shell side, run locally or through a
provider's exec channel). The signal defaults to a real-time signal (SIGRTMIN+7) that programs and
launchers leave alone: Slurm and Lightning use SIGUSR1/SIGUSR2 for preemption and requeueing. A handler
the program already had for it is chained, never replaced.
"""

from __future__ import annotations

import faulthandler
import math
import os
import re
import shlex
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

STACK_FILE = "stack-{pid}.txt"
_SECTION = "--dbgfwd-stack--"
_END = "--dbgfwd-stack-end--"


def default_signal() -> int:
    rtmin = getattr(signal, "SIGRTMIN", None)
    return int(rtmin) + 7 if rtmin is not None else int(signal.SIGUSR2)


@dataclass(frozen=True)
class Handler:
    signal: int
    path: Path


def install(directory: Path, signum: int | None = None) -> Handler | None:
    """Register the dump handler for this process; None (and nothing changed) where that is impossible."""
    signum = default_signal() if signum is None else signum
    path = Path(directory) / STACK_FILE.format(pid=os.getpid())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0),
                     0o600)
    except OSError:
        return None
    sink = os.fdopen(fd, "a", buffering=1)
    previous = signal.getsignal(signum)
    # Chaining to a default action would run it (a real-time signal's default is to terminate).
    chain = previous not in (signal.SIG_DFL, signal.SIG_IGN)
    try:
        faulthandler.register(signum, file=sink, all_threads=True, chain=chain)
    except (ValueError, RuntimeError, OSError):
        sink.close()
        return None
    _keep.append(sink)  # faulthandler writes to the fd; the file object must outlive this call
    return Handler(signum, path)


_keep: list = []


# ---- the reading side ----

@dataclass(frozen=True)
class Frame:
    file: str
    line: int
    function: str


@dataclass
class ThreadStack:
    id: int
    current: bool = False  # the thread the signal handler ran on
    frames: list[Frame] = field(default_factory=list)  # innermost first, as faulthandler writes them


_THREAD = re.compile(r"^(Current thread|Thread) (0x[0-9a-fA-F]+)")
_FRAME = re.compile(r'^\s+File "(.*)", line (\d+) in (.*)$')
_FRAME_NOLINE = re.compile(r'^\s+File "(.*)", line \?\?\? in (.*)$')


_LAUNCHER_DIR = os.sep + os.path.join("dbgfwd", "rank") + os.sep


def without_launcher(frames: list[Frame]) -> list[Frame]:
    """The program's frames: dbgfwd-rank's own and runpy's, below the program's `<module>`, are dropped."""
    end = len(frames)
    while end > 0 and (frames[end - 1].file.endswith("runpy.py")
                       or _LAUNCHER_DIR in frames[end - 1].file):
        end -= 1
    return frames[:end] if end else frames


def parse_dump(text: str) -> list[ThreadStack]:
    """Threads and frames from faulthandler's text (unknown lines are skipped); frames of dbgfwd-rank itself
    (below the program) are left out."""
    threads: list[ThreadStack] = []
    for line in text.splitlines():
        m = _THREAD.match(line)
        if m:
            threads.append(ThreadStack(id=int(m.group(2), 16), current=m.group(1) == "Current thread"))
            continue
        if not threads:
            continue
        m = _FRAME.match(line)
        if m:
            threads[-1].frames.append(Frame(m.group(1), int(m.group(2)), m.group(3).strip()))
            continue
        m = _FRAME_NOLINE.match(line)
        if m:
            threads[-1].frames.append(Frame(m.group(1), 0, m.group(2).strip()))
    for t in threads:
        t.frames = without_launcher(t.frames)
    return threads


@dataclass(frozen=True)
class DumpRequest:
    pid: int
    signal: int
    path: str


def stack_command(requests: Sequence[DumpRequest], wait: float) -> str:
    """A POSIX sh script: empty each rank's stack file, signal every rank (one after the other, no pause),
    wait until each file has stopped growing (or `wait` seconds), print them in sections."""
    lines = []
    for r in requests:
        f = shlex.quote(r.path)
        lines.append(f"if [ -f {f} ] && [ ! -L {f} ] && [ -O {f} ]; then : > {f}; kill -{r.signal} {r.pid} 2>/dev/null "
                     f"|| echo 'no such process' > {f}.err; else echo 'no stack file' > {f}.err; fi")
    files = " ".join(shlex.quote(r.path) for r in requests)
    # Bounded by the clock, not by a count of 50 ms ticks: on a loaded host each tick's processes take far longer
    # than 50 ms, the loop outlasted the caller's own limit, and the output was cut before every rank's section.
    lines.append(
        f"end=$(( $(date +%s) + {math.ceil(wait) + 1} )); last=; while [ \"$(date +%s)\" -lt \"$end\" ]; do "
        "sleep 0.05; "
        f"now=$(for f in {files}; do [ -s \"$f\" ] && wc -c < \"$f\" || echo 0; done | tr '\\n' ' '); "
        "case \" $now \" in *' 0 '*) last=;; *) [ \"$now\" = \"$last\" ] && break; last=$now;; esac; done")
    for r in requests:
        f = shlex.quote(r.path)
        lines.append(f"echo '{_SECTION} {r.pid}'; cat {f}.err 2>/dev/null && rm -f {f}.err || head -c 1048576 {f}")
    lines.append(f"echo '{_END}'")
    return "\n".join(lines)


def parse_command_output(text: str) -> dict[int, str]:
    """pid -> what its stack file held (or the error line the script wrote)."""
    out: dict[int, str] = {}
    pid = None
    buf: list[str] = []
    for line in text.splitlines():
        if line.startswith(_SECTION) or line.strip() == _END:
            if pid is not None:
                out[pid] = "\n".join(buf)
            buf, pid = [], None
            if line.startswith(_SECTION):
                try:
                    pid = int(line[len(_SECTION):].strip())
                except ValueError:
                    pid = None
            continue
        if pid is not None:
            buf.append(line)
    return out
