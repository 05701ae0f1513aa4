"""The target side of `dbgfwd attach --inject`: find a running job's rank processes and make each debuggable.

Run where the ranks run (this machine, an SSH host, a pod), as the ranks' user, by dbgfwd through the
provider's exec channel:

    python3 -m dbgfwd.rank.inject '<request JSON>'

It prints one JSON report between two marker lines. Standard library only; it runs with whatever Python
the target has (the ranks' own interpreter is used only to ask whether it has debugpy).

Finding ranks: processes of this user, in this network namespace (their 127.0.0.1 is the one the forward
reaches), running Python, whose environment carries a launcher's rank variables (dbgfwd.rank.env); the
children of a rank that inherited its environment (data loader workers, debugpy's adapter) are not ranks.
`match` (a regular expression) narrows by command line.

Injecting, without ever stopping the job for long (every step bounded; the process runs on whatever happens):
1. gdb attaches for well under a second, writes the bootstrap line (dbgfwd.rank.injected.bootstrap) into a
   fresh anonymous page of the process and queues it with `Py_AddPendingCall`: the interpreter's main
   thread runs it at its next safe point (between two bytecodes), as it would a signal handler.
2. A main thread blocked in C (a gloo/NCCL collective, a C extension: the hung job) reaches no safe point.
   If the bootstrap has not run after a second and the main thread sits in a system call, gdb calls it
   there directly, holding the GIL, as debugpy's own attach-by-pid does. The line runs once either way.
3. Without gdb, on Python 3.14+, `sys.remote_exec` delivers the same line (PEP 768).
A process that cannot be injected is reported with the reason; the others go on.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dbgfwd import envvars
from dbgfwd.rank import env as rankenv
from dbgfwd.rank import markers

BEGIN = "--dbgfwd-inject-report--"
END = "--dbgfwd-inject-end--"
GDB_ENV = envvars.GDB  # where gdb is, when not on PATH
CAP_SYS_PTRACE = 19
PENDING_WAIT = 1.0  # seconds the bootstrap gets to run at a safe point before a blocked main thread is entered
_PYTHON_EXE = re.compile(r"^(python|pypy)[\d.]*[dmu]?$")
# Processes that carry a rank's environment but are dbgfwd's or debugpy's own, never ranks.
_NOT_RANKS = ("debugpy/adapter", "debugpy.adapter", "dbgfwd.rank.inject", "dbgfwd-inject")


@dataclass
class Proc:
    pid: int
    ppid: int
    uid: int
    cmdline: list
    exe: str = ""
    environ: dict | None = None
    environ_error: str = ""
    netns: str = ""
    root: str = ""


@dataclass
class Rank:
    """One rank process as the report gives it."""

    pid: int
    rank: int | None = None
    local_rank: int | None = None
    world_size: int | None = None
    source: str = ""
    port: int | None = None
    exe: str = ""
    command: str = ""
    state: str = "skipped"  # ready (already debuggable) | injectable | injected | pending | failed | skipped
    reason: str = ""
    needs_debugpy: bool | None = None
    python: str = ""  # the rank interpreter's major.minor
    applied: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    took: float | None = None
    how: str = ""  # pending-call | main-thread | remote-exec
    files: list = field(default_factory=list)  # what the injected code wrote (marker, stack file)


# ---- reading processes ----

def _read(path: str, limit: int = 1 << 20) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit)
    except OSError:
        return None


def _status(pid: int) -> tuple[int, int] | None:
    """(ppid, real uid) from /proc/PID/status: right even for a process that made itself non-dumpable, whose
    /proc files then belong to root."""
    raw = _read(f"/proc/{pid}/status", 65536)
    if raw is None:
        return None
    ppid = uid = None
    for line in raw.decode("utf-8", "replace").splitlines():
        if line.startswith("PPid:"):
            ppid = int(line.split()[1])
        elif line.startswith("Uid:"):
            uid = int(line.split()[1])
    return None if ppid is None or uid is None else (ppid, uid)


def read_proc(pid: int) -> Proc | None:
    st = _status(pid)
    if st is None:
        return None
    raw = _read(f"/proc/{pid}/cmdline")
    if not raw:
        return None  # a kernel thread, or gone
    proc = Proc(pid, st[0], st[1], [a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0")])
    try:
        proc.exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        proc.exe = ""
    try:
        proc.netns = os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        proc.netns = ""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            data = fh.read(4 << 20)
        proc.environ = dict(kv.split("=", 1) for kv in data.decode("utf-8", "replace").split("\0") if "=" in kv)
    except PermissionError:
        proc.environ_error = "permission denied"
    except OSError as exc:
        proc.environ_error = exc.strerror or str(exc)
    return proc


def is_python(proc: Proc) -> bool:
    if _PYTHON_EXE.match(os.path.basename(proc.exe.replace(" (deleted)", ""))):
        return True
    maps = _read(f"/proc/{proc.pid}/maps", 8 << 20)
    return bool(maps and b"libpython" in maps)


def _ancestors(pid: int, procs: dict) -> list[int]:
    out, seen = [], set()
    while pid in procs and pid not in seen:
        seen.add(pid)
        pid = procs[pid].ppid
        out.append(pid)
    return out


def listeners_by_port() -> dict[int, set[int]]:
    """port -> socket inodes in LISTEN, from this network namespace's /proc/net/tcp{,6}."""
    out: dict[int, set[int]] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        text = (_read(name, 64 << 20) or b"").decode("ascii", "replace")
        for s in markers.parse_tcp_table(text):
            if s.state == "0A" and s.inode:
                out.setdefault(s.local_port, set()).add(s.inode)
    return out


def socket_inodes(pid: int) -> set[int]:
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def listening_pids(port: int, listeners: dict, procs) -> list[int]:
    inodes = listeners.get(port, set())
    return [p for p in procs if inodes & socket_inodes(p)] if inodes else []


# ---- preconditions ----

def ptrace_problem() -> str | None:
    """Why this user cannot ptrace its own processes here, or None."""
    raw = _read("/proc/sys/kernel/yama/ptrace_scope", 16)
    scope = int(raw.strip()) if raw and raw.strip().isdigit() else 0
    if scope >= 3:
        return ("ptrace is disabled on this host (kernel.yama.ptrace_scope=3) until reboot: nothing can attach to "
                "a running process here; start the ranks under dbgfwd-rank instead")
    if scope >= 1 and not _has_cap(CAP_SYS_PTRACE):
        return (f"kernel.yama.ptrace_scope={scope} lets a process be attached only by its parent: run "
                "`sudo sysctl kernel.yama.ptrace_scope=0` on the host, or in a container add the SYS_PTRACE "
                "capability (Kubernetes: securityContext.capabilities.add: [\"SYS_PTRACE\"])")
    return None


def _has_cap(bit: int) -> bool:
    raw = _read("/proc/self/status", 65536) or b""
    for line in raw.decode("ascii", "replace").splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def find_gdb() -> str | None:
    explicit = os.environ.get(GDB_ENV)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("gdb")


_PY_QUERY = ("import importlib.util, sys; "
             "print('%d.%d' % sys.version_info[:2], int(importlib.util.find_spec('debugpy') is not None))")


def interpreter_facts(proc: Proc, cache: dict) -> tuple[str, bool | None]:
    """(major.minor, has debugpy) of the rank's interpreter, asked with its environment and working directory."""
    env = proc.environ or {}
    key = (proc.exe, env.get("PYTHONPATH"), env.get("PYTHONHOME"), env.get("VIRTUAL_ENV"),
           tuple(isolation_flags(proc.cmdline)))
    if key not in cache:
        try:
            cwd = os.readlink(f"/proc/{proc.pid}/cwd")
        except OSError:
            cwd = "/"
        exe = launched_as(proc, cwd)
        try:
            done = subprocess.run([exe, *isolation_flags(proc.cmdline), "-c", _PY_QUERY], capture_output=True, text=True,
                                  timeout=30, env=env, cwd=cwd if os.path.isdir(cwd) else "/",
                                  stdin=subprocess.DEVNULL)
            version, has = done.stdout.split()
            cache[key] = (version, has == "1")
        except (OSError, ValueError, subprocess.SubprocessError):
            cache[key] = ("", None)
    return cache[key]


def isolation_flags(cmdline: list) -> list[str]:
    """The interpreter options among the process's own that change what it can import (-I, -E, -S, -s)."""
    out: list[str] = []
    args = iter(cmdline[1:])
    for arg in args:
        if not arg.startswith("-") or arg in ("-", "-m", "-c", "--") or arg.startswith(("-m", "-c")):
            break
        if arg in ("-X", "-W", "--check-hash-based-pycs"):
            next(args, None)
            continue
        letters = arg[1:]
        if letters.isalpha():
            out += [f"-{c}" for c in letters if c in "IESs" and f"-{c}" not in out]
    return out


def launched_as(proc: Proc, cwd: str) -> str:
    """The interpreter as the process named it (a virtual environment's bin/python: the link, not its target,
    decides which site-packages it sees), when that still leads to the same executable; else its executable."""
    exe = proc.exe.replace(" (deleted)", "")
    first = proc.cmdline[0] if proc.cmdline else ""
    candidates = []
    if first and os.sep in first:
        candidates.append(first if os.path.isabs(first) else os.path.join(cwd, first))
    elif first:
        path = (proc.environ or {}).get("PATH", "")
        candidates += [os.path.join(d, first) for d in path.split(os.pathsep) if d]
    for c in candidates:
        try:
            if os.path.realpath(c) == os.path.realpath(exe) and os.access(c, os.X_OK):
                return c
        except OSError:
            continue
    return exe


def _version(text: str) -> tuple[int, ...]:
    """"3.11" -> (3, 11); (0, 0) when the interpreter could not be asked."""
    return tuple(int(x) for x in text.split(".")) if text else (0, 0)


# ---- the scan ----

def scan(request: dict) -> tuple[list[Rank], list[Rank]]:
    """(ranks found, other processes the pattern matched but that are not injectable ranks)."""
    base_port = int(request["base_port"])
    pattern = re.compile(request["match"]) if request.get("match") else None
    me, uid = os.getpid(), os.getuid()
    try:
        my_netns = os.readlink("/proc/self/ns/net")
    except OSError:
        my_netns = ""
    procs: dict[int, Proc] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me:
            p = read_proc(int(name))
            if p is not None:
                procs[p.pid] = p
    mine = set(_ancestors(me, procs)) | {me}
    ranks: list[Rank] = []
    others: list[Rank] = []
    by_pid: dict[int, rankenv.RankEnv] = {}
    for p in procs.values():
        if p.pid in mine:
            continue
        command = " ".join(p.cmdline)
        if pattern is not None and not pattern.search(command):
            continue
        if any(s in command for s in _NOT_RANKS):
            continue
        entry = Rank(pid=p.pid, exe=p.exe, command=command[:300])
        if p.uid != uid:
            if pattern is not None:
                entry.reason = (f"belongs to uid {p.uid}, not to you (uid {uid}): dbgfwd injects only into your "
                                "own processes")
                others.append(entry)
            continue
        if my_netns and p.netns and p.netns != my_netns:
            if pattern is not None:
                entry.reason = "in another network namespace (another container?): its 127.0.0.1 is not this one"
                others.append(entry)
            continue
        if p.environ is None:
            if pattern is not None or is_python(p):
                entry.reason = (f"cannot read its environment ({p.environ_error}): the process is not "
                                "dumpable or ptrace is not allowed on it, so it cannot be injected either")
                others.append(entry)
            continue
        env = rankenv.detect(p.environ)
        if env is None:
            if pattern is not None:
                entry.reason = "no rank environment (RANK, OMPI_COMM_WORLD_RANK, SLURM_PROCID, ...): not a rank"
                others.append(entry)
            continue
        if not is_python(p):
            if pattern is not None:
                entry.reason = f"not a Python process ({os.path.basename(p.exe) or 'unknown executable'})"
                others.append(entry)
            continue
        by_pid[p.pid] = env
        entry.rank, entry.local_rank, entry.world_size, entry.source = \
            env.rank, env.local_rank, env.world_size, env.source
        entry.port = base_port + env.local_rank
        entry.state = "injectable"
        ranks.append(entry)
    # A rank's children that inherited its environment (data loader workers, spawned helpers) are not ranks.
    ranks = [r for r in ranks if not any(a in by_pid and by_pid[a] == by_pid[r.pid] for a in _ancestors(r.pid, procs))]
    _check_each(ranks, procs, request)
    return sorted(ranks, key=lambda r: (r.rank, r.pid)), others


def _check_each(ranks: list[Rank], procs: dict, request: dict) -> None:
    listeners = listeners_by_port()
    by_local: dict[int, list[Rank]] = {}
    for r in ranks:
        by_local.setdefault(r.local_rank, []).append(r)
    for local, same in by_local.items():
        if len(same) > 1:
            pids = ", ".join(str(r.pid) for r in same)
            for r in same:
                r.state, r.reason = "skipped", (f"{len(same)} processes claim local rank {local} (pids {pids}): two "
                                                "jobs? narrow with --match PATTERN")
    ptrace = ptrace_problem()
    gdb = find_gdb()
    facts_cache: dict = {}
    for r in ranks:
        if r.state != "injectable":
            continue
        proc = procs[r.pid]
        runtime = request.get("runtime_dir") or markers.runtime_dir(proc.environ)
        marker = markers.read_marker_file(markers.marker_path(Path(runtime), r.pid))
        if marker is not None:
            r.state, r.reason = "ready", "already debuggable (started under dbgfwd-rank, or injected before)"
            r.port = marker.port
            continue
        if not 0 < r.port < 65536:
            r.state, r.reason = "skipped", f"port {r.port} is out of range: choose another --base-port"
            continue
        holders = listening_pids(r.port, listeners, procs)
        if r.pid in holders:
            r.state, r.reason = "ready", f"already listens on {r.port} (debugpy started by the program)"
            continue
        if holders or r.port in listeners:
            who = f"pid {holders[0]}" if holders else "another user's process"
            r.state, r.reason = "skipped", f"port {r.port} is taken by {who}: choose another --base-port"
            continue
        r.python, has_debugpy = interpreter_facts(proc, facts_cache)
        r.needs_debugpy = None if has_debugpy is None else not has_debugpy
        if gdb is None and _version(r.python) < (3, 14):
            r.state, r.reason = "failed", (f"gdb is not installed here (needed to attach to Python {r.python or '?'}; "
                                           "Python 3.14+ needs none): apt-get install gdb, or set "
                                           f"{GDB_ENV}=/path/to/gdb")
        elif ptrace:
            r.state, r.reason = "failed", ptrace


# ---- injecting ----

def _gdb_script(code_file: str, size: int, direct: bool) -> str:
    """A gdb command file. Any error stops the file there (gdb's rule for command files), so nothing is called
    with a page that was not mapped or written."""
    pages = (size + 4095) // 4096 * 4096
    lines = [
        "set confirm off",
        "set pagination off",
        "set print thread-events off",
        "set print inferior-events off",
        "set unwindonsignal on",  # a signal inside a called function unwinds it instead of leaving it half done
        "set scheduler-locking off",  # other threads run during the call (the GIL holder must be able to let go)
        "thread 1",  # the main thread: its tid is the process id, gdb's first thread when it attaches
        f"set $dbgfwd_page = (char *) mmap(0, {pages}, 3, 0x22, -1, 0)",  # PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
        "if $dbgfwd_page == (char *) -1",
        "  echo dbgfwd-error: mmap failed\\n",
        "else",
        f"  restore {code_file} binary $dbgfwd_page",
        "  if *$dbgfwd_page != 101",  # 'e' of exec(
        "    echo dbgfwd-error: the page was not written\\n",
        "  else",
    ]
    if direct:
        lines += [
            "    set $dbgfwd_gil = (int) PyGILState_Ensure()",
            "    echo dbgfwd-result:",
            "    output (int) PyRun_SimpleString($dbgfwd_page)",
            "    echo \\n",
            "    call (void) PyGILState_Release($dbgfwd_gil)",
        ]
    else:
        lines += [
            "    echo dbgfwd-result:",
            "    output (int) Py_AddPendingCall((int (*)(void *)) PyRun_SimpleString, $dbgfwd_page)",
            "    echo \\n",
        ]
    lines += ["  end", "end", "detach", "quit"]
    return "\n".join(lines) + "\n"


class _GdbFailed(Exception):
    pass


def _run_gdb(gdb: str, pid: int, script: str, workdir: str, timeout: float) -> str:
    path = os.path.join(workdir, f"gdb-{pid}-{time.monotonic_ns()}.gdb")
    with open(path, "w") as fh:
        fh.write(script)
    # Only what is needed: the interpreter (where the C API lives when Python is linked statically), libc
    # (mmap) and libpython. Reading every library's symbols (torch has hundreds of MB of them) takes seconds.
    argv = [gdb, "-nx", "-nh", "-batch", "-iex", "set auto-load off", "-iex", "set debuginfod enabled off",
            "-iex", "set auto-solib-add off", "-p", str(pid),
            "-ex", "sharedlibrary libc\\.so", "-ex", "sharedlibrary libpython", "-x", path]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONIOENCODING")}
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # gdb detaches from what it attached before it goes
        try:
            out, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        _resume_if_stopped(pid)
        raise _GdbFailed(f"gdb did not finish within {timeout:g}s (it was stopped; the process runs on)")
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    _resume_if_stopped(pid)
    return out


def _resume_if_stopped(pid: int) -> None:
    """A debugger that went away mid-attach can leave the process stopped: let it run."""
    raw = _read(f"/proc/{pid}/stat", 4096)
    if raw:
        state = raw.decode("ascii", "replace").rsplit(")", 1)[-1].split()[:1]
        if state == ["T"]:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass


def _gdb_outcome(out: str) -> int:
    """The C call's int result; _GdbFailed saying why when there is none."""
    at = out.find("dbgfwd-result:")
    if at >= 0:  # the value follows, maybe after lines gdb printed while the call ran (threads, forks)
        m = re.search(r"^(?:dbgfwd-result:)?(-?\d+)$", out[at:], re.M)
        if m:
            return int(m.group(1))
    low = out.lower()
    if "ptrace: operation not permitted" in low or "could not attach" in low:
        raise _GdbFailed("ptrace was refused (another user's process, a non-dumpable process, Yama, or a container "
                         "without SYS_PTRACE: Kubernetes securityContext.capabilities.add: [\"SYS_PTRACE\"])")
    if "no such process" in low:
        raise _GdbFailed("the process exited during injection")
    if re.search(r'no symbol "(py\w+|mmap)"', low) or "has unknown return type" in low and "py" in low:
        raise _GdbFailed("Python's C API is not visible to gdb in this process (a stripped or embedded interpreter)")
    m = re.search(r"dbgfwd-error: (.*)", out)
    detail = m.group(1) if m else (out.strip().splitlines() or ["no output"])[-1]
    raise _GdbFailed(f"gdb could not run the bootstrap: {detail[:200]}")


def _main_thread_blocked(pid: int) -> bool | None:
    """True when the main thread sits in a system call (a safe place to enter), False when it runs, None: gone."""
    if not markers.pid_alive(pid):
        return None
    raw = _read(f"/proc/{pid}/syscall", 256)
    if raw is None:
        return False
    first = raw.split()[:1]
    return bool(first) and first[0] not in (b"running", b"-1")


def _wait_file(path: str, pid: int, seconds: float) -> bool:
    """True once `path` exists; False when `seconds` pass or the process is gone first."""
    deadline = time.monotonic() + seconds
    while True:
        if os.path.exists(path):
            return True
        if not markers.pid_alive(pid) or time.monotonic() >= deadline:
            return os.path.exists(path)
        time.sleep(0.02)


def _paths(workdir: str, pid: int) -> tuple[str, str, str]:
    """(result file, started file, code file) of one rank's injection."""
    return tuple(os.path.join(workdir, f"{kind}-{pid}.{ext}")  # type: ignore[return-value]
                 for kind, ext in (("result", "json"), ("started", "flag"), ("code", "bin")))


def deliver(rank: Rank, request: dict, workdir: str, gdb: str | None, timeout: float) -> bool:
    """Have the rank start running the bootstrap: True once it has (it then works on its own, and `collect`
    reads what it did); False with the rank's state and reason set when it cannot be done."""
    from dbgfwd.rank.injected import bootstrap

    result_path, started_path, code_file = _paths(workdir, rank.pid)
    config = {"base_port": int(request["base_port"]), "result": result_path, "started": started_path,
              "runtime_dir": request.get("runtime_dir"), "debugpy_dir": request.get("debugpy_dir"),
              "collective_timeout": request.get("collective_timeout")}
    code = bootstrap(request["bundle"], config).encode() + b"\0"
    with open(code_file, "wb") as fh:
        fh.write(code)
    deadline = time.monotonic() + timeout
    try:
        if gdb is None and _version(rank.python) >= (3, 14):
            rank.how = "remote-exec"
            script = code_file[:-len(".bin")] + ".py"
            with open(script, "wb") as fh:
                fh.write(code[:-1])
            done = subprocess.run([rank.exe, "-c", f"import sys; sys.remote_exec({rank.pid}, {script!r})"],
                                  capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                raise _GdbFailed(f"sys.remote_exec failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
            return _wait_file(started_path, rank.pid, max(0.1, deadline - time.monotonic()))
        rank.how = "pending-call"
        queued = _gdb_outcome(_run_gdb(gdb, rank.pid, _gdb_script(code_file, len(code), False), workdir,
                                       max(5.0, deadline - time.monotonic())))
        if _wait_file(started_path, rank.pid, PENDING_WAIT if queued == 0 else 0):
            return True
        while time.monotonic() < deadline:
            blocked = _main_thread_blocked(rank.pid)
            if blocked is None:
                raise _GdbFailed("the process exited during injection")
            if blocked:  # no safe point will come soon: enter the thread where it waits
                rank.how = "main-thread"
                _gdb_outcome(_run_gdb(gdb, rank.pid, _gdb_script(code_file, len(code), True), workdir,
                                      max(5.0, deadline - time.monotonic())))
                return _wait_file(started_path, rank.pid, 1.0)
            if _wait_file(started_path, rank.pid, 0.2):
                return True
        rank.state, rank.reason = "pending", (f"queued, not run within {timeout:g}s: the main thread is busy in "
                                              "native code; debugpy starts when it next runs Python")
    except _GdbFailed as exc:
        gone = not markers.pid_alive(rank.pid)
        rank.state, rank.reason = "failed", "the process exited during injection" if gone else str(exc)
    except (OSError, subprocess.SubprocessError) as exc:
        rank.state, rank.reason = "failed", f"cannot run the injector: {exc}"
    return False


def collect(rank: Rank, workdir: str, deadline: float) -> None:
    """What the bootstrap did in the rank (it writes its result once debugpy listens, or it failed)."""
    result_path = _paths(workdir, rank.pid)[0]
    raw = None
    while True:
        raw = _read(result_path, 1 << 20)
        if raw or not markers.pid_alive(rank.pid) or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    if not raw:
        if not markers.pid_alive(rank.pid):
            rank.state, rank.reason = "failed", "the process exited during injection"
        else:
            rank.state, rank.reason = "failed", "started, but debugpy did not come up in time (see the job's output)"
        return
    try:
        result = json.loads(raw)
    except ValueError:  # the bootstrap's last resort: the exception's repr
        result = {"ok": False, "error": raw.decode("utf-8", "replace")[:300]}
    if not isinstance(result, dict):
        result = {"ok": False, "error": str(result)[:300]}
    rank.applied, rank.warnings = list(result.get("applied") or []), list(result.get("warnings") or [])
    if result.get("ok"):
        rank.state = "injected"
        rank.port = result.get("port", rank.port)
        rank.files = [str(f) for f in result.get("files") or ()]
    else:
        rank.state, rank.reason = "failed", f"inside the process: {result.get('error') or 'unknown error'}"


def inject_one(rank: Rank, request: dict, workdir: str, gdb: str | None, timeout: float) -> None:
    began = time.monotonic()
    if deliver(rank, request, workdir, gdb, timeout):
        collect(rank, workdir, began + timeout)
    rank.took = round(time.monotonic() - began, 3)


def inject(ranks: list[Rank], request: dict) -> None:
    """Every injectable rank: delivered a few at a time (gdb is short but busy), then each rank starts debugpy
    on its own while the others are delivered; results are collected at the end."""
    todo = [r for r in ranks if r.state == "injectable"]
    if not todo:
        return
    gdb = find_gdb()
    workdir = request["bundle"]
    timeout = float(request.get("timeout") or 30.0)
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, min(len(todo), (os.cpu_count() or 2) * 2, 16))) as pool:
        delivered = list(pool.map(lambda r: deliver(r, request, workdir, gdb, timeout), todo))
    for rank, ok in zip(todo, delivered):
        if ok:
            collect(rank, workdir, time.monotonic() + timeout)
        rank.took = round(time.monotonic() - began, 3)


def reap_when_gone(directory: str, pids: list[int], files: list[str]) -> None:
    """Remove the bundle, and the markers written for the injected ranks, once every process that may still load
    code from it has exited (a detached shell loop, so it outlives the exec channel that started it; a
    killed rank runs no exit handler of ours, since the program's signal handlers are left alone)."""
    import shlex

    watch = " ".join(str(int(p)) for p in pids)
    gone = " ".join(shlex.quote(f) for f in [directory, *files])
    script = (f"while :; do a=; for p in {watch}; do [ -d /proc/$p ] && a=1; done; [ -z \"$a\" ] && break; sleep 2; "
              f"done; rm -rf {gone}")
    subprocess.Popen(["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def run(request: dict) -> dict:
    request = dict(request, bundle=request.get("bundle") or os.getcwd())
    ranks, others = scan(request)
    if request.get("mode") == "inject":
        inject(ranks, request)
    report = {"host": platform.node(), "system": platform.system(), "machine": platform.machine(),
              "python": "%d.%d" % sys.version_info[:2], "uid": os.getuid(), "bundle": request["bundle"],
              "ranks": [asdict(r) for r in ranks], "others": [asdict(o) for o in others]}
    if request.get("cleanup"):
        using = [r for r in ranks if r.state in ("injected", "pending")]
        if using:
            reap_when_gone(request["bundle"], [r.pid for r in using], [f for r in using for f in r.files])
        else:
            shutil.rmtree(request["bundle"], ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        request = json.loads(args[0])
        report = run(request)
    except Exception as exc:  # the caller reads the report; a traceback would be noise
        report = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(f"{BEGIN}\n{json.dumps(report)}\n{END}\n")
    sys.stdout.flush()


def parse_report(text: str) -> dict | None:
    """The report out of the agent's stdout (anything else the shell printed is ignored)."""
    start = text.find(BEGIN)
    end = text.find(END, start + 1)
    if start < 0 or end < 0:
        return None
    try:
        data = json.loads(text[start + len(BEGIN):end])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


if __name__ == "__main__":
    main()
