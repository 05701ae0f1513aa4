"""Workspace session state: what the running `dbgfwd attach` is doing, for `status`, `wait`, `gen-launch`.

`<workspace>/.dbgfwd/session.json` (mode 0600) is rewritten atomically by the attach process through
`write_session` (the one writer) and read through `read_session` (the one reader, which checks each rank
record it hands out). A rank record is `RankStatus.as_dict()`. Secrets never go in it: targets are
described by names, never by tokens or URLs with credentials.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from dbgfwd import envvars, platform
from dbgfwd.errors import BadFileError, DbgfwdError, NotFoundPathError, UntrustedPathError, WorkspaceBusy
from dbgfwd.fsutil import atomic_write_text

log = logging.getLogger("dbgfwd.session")

STATE_DIR = ".dbgfwd"
SESSION_FILE = "session.json"
PORTS_FILE = "ports.json"
LOCK_FILE = "attach.lock"
SESSION_VERSION = 1
READY_STATES = ("ready", "connected")
HEARTBEAT = 5.0  # attach rewrites (or, unchanged, touches) session.json at least this often
STALE_AFTER = 20.0  # a session file older than this belongs to an attach that is stopped or hung


def workspace_dir(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return Path(explicit).resolve()
    env = os.environ.get(envvars.WORKSPACE)
    return Path(env).resolve() if env else Path.cwd()


def state_dir(workspace: Path) -> Path:
    return workspace / STATE_DIR


def session_path(workspace: Path) -> Path:
    return state_dir(workspace) / SESSION_FILE


def ports_path(workspace: Path) -> Path:
    return state_dir(workspace) / PORTS_FILE


def check_workspace(workspace: Path) -> None:
    """The workspace must exist (a typo must not create a folder tree) and be a folder."""
    if not workspace.exists():
        raise NotFoundPathError(f"workspace {workspace} does not exist",
                                hint="create it, or pass an existing folder with --workspace")
    if not workspace.is_dir():
        raise NotFoundPathError(f"workspace {workspace} is not a folder", hint="pass a folder with --workspace")


def ensure_state_dir(workspace: Path) -> None:
    """Create .dbgfwd/ (0700) with a .gitignore so its files are never committed. The workspace itself
    must exist: only .dbgfwd/ is created."""
    d = state_dir(workspace)
    check_workspace(workspace)
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass  # checked below, without following it
    st = os.lstat(d)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        # A link would have dbgfwd write (and chmod) wherever it points: a hostile workspace's trap.
        raise UntrustedPathError(f"{d} is not a folder but a link or a file; nothing was written",
                                 hint="remove it; dbgfwd creates its own")
    if st.st_uid != os.getuid():
        raise UntrustedPathError(f"{d} belongs to uid {st.st_uid}, not to you; nothing was written",
                                 hint="remove it; dbgfwd creates its own")
    if st.st_mode & 0o077:
        os.chmod(d, 0o700)  # ours, made earlier (by hand, an old version, a permissive umask): only us
    gitignore = d / ".gitignore"
    if not gitignore.exists():
        atomic_write_text(gitignore, "*\n", mode=0o644)


class WorkspaceLock:
    """Held by the one `dbgfwd attach` of a workspace for its whole life: an flock on .dbgfwd/attach.lock,
    which the kernel releases when the process ends however it ends (no stale pid file to trust)."""

    def __init__(self, workspace: Path, fd: int):
        self.workspace, self.fd = workspace, fd

    def restore(self) -> bool:
        """Take the lock again if .dbgfwd/attach.lock was removed (rm -rf .dbgfwd mid-session): our flock
        is on a file nobody can find any more. True when it was restored."""
        path = state_dir(self.workspace) / LOCK_FILE
        try:
            if os.path.samestat(os.stat(path), os.fstat(self.fd)):
                return False
        except FileNotFoundError:
            pass
        except OSError:
            return False
        try:
            fresh = lock_workspace(self.workspace, wait=0)
        except DbgfwdError as exc:
            log.warning("the workspace state was removed and cannot be put back: %s", exc.message)
            return False
        old, self.fd = self.fd, fresh.fd
        os.close(old)
        return True

    def release(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                platform.unlock(fd)
            finally:
                os.close(fd)


def _open_lock(workspace: Path, create: bool) -> int | None:
    path = state_dir(workspace) / LOCK_FILE
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UntrustedPathError(f"{path} cannot be opened ({exc.strerror}); nothing was written",
                                 hint="remove it; dbgfwd creates its own") from None
    st = os.fstat(fd)
    if st.st_uid != os.getuid() or not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UntrustedPathError(f"{path} is not a file of yours; nothing was written",
                                 hint="remove it; dbgfwd creates its own")
    return fd


def lock_workspace(workspace: Path, wait: float = 1.0) -> WorkspaceLock:
    """Take the workspace's attach lock, or raise WorkspaceBusy naming the attach that holds it.
    Waits up to `wait` seconds: a `status` probing the lock holds it for an instant."""
    ensure_state_dir(workspace)
    fd = _open_lock(workspace, create=True)
    assert fd is not None
    deadline = time.monotonic() + wait
    while not platform.try_lock(fd):
        if time.monotonic() >= deadline:
            holder = _lock_holder(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise WorkspaceBusy(f"another dbgfwd attach ({who}) already runs in {workspace}",
                                hint="stop it first (Ctrl-C in its terminal), or attach from another "
                                     "--workspace")
        time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return WorkspaceLock(workspace, fd)


def _lock_holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def attach_running(workspace: Path) -> int | None | bool:
    """Whether an attach holds this workspace's lock: its pid (as it wrote it), False when none does,
    None when this system cannot tell (no lock file support)."""
    try:
        fd = _open_lock(workspace, create=False)
    except UntrustedPathError:
        return False
    if fd is None:
        return False
    try:
        if platform.try_lock(fd, exclusive=False):
            platform.unlock(fd)
            return False
        return _lock_holder(fd) or True
    except OSError:
        return None
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=16384)
def _redact(text: str) -> str:
    # session.json is rewritten every few seconds with the same names and reasons for every rank: redact
    # each distinct string once (a dozen regexes over 1024 ranks' fields was most of an idle attach's CPU)
    from dbgfwd.ui.console import redact

    return redact(text)


def _redacted(value: Any) -> Any:
    """Provider messages and target details land here: pass every string through the log redaction."""
    if isinstance(value, str):
        return _redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v) for v in value]
    return value


def write_session(workspace: Path, payload: dict[str, Any]) -> None:
    ensure_state_dir(workspace)
    data = {"version": SESSION_VERSION, "pid": os.getpid(), "pid_start": platform.process_start(os.getpid()),
            "uid": os.getuid(), "updated": time.time(), **_redacted(payload)}
    atomic_write_text(session_path(workspace), json.dumps(data, indent=2) + "\n", mode=0o600)


def touch_session(workspace: Path) -> bool:
    """Mark session.json fresh without rewriting it (nothing in it changed). False when it is gone or is
    not a plain file of ours: the caller then writes it in full."""
    path = session_path(workspace)
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            return False
        os.utime(path, follow_symlinks=False)
    except OSError:
        return False
    return True


def remove_session(workspace: Path) -> None:
    try:
        session_path(workspace).unlink()
    except FileNotFoundError:
        pass


@dataclass(frozen=True)
class SessionRank:
    """One rank as the running attach recorded it."""

    rank: int
    local_port: int
    local_rank: int
    node: str  # where it runs, as attach names it
    state: str
    remote_root: str | None
    row: Mapping[str, Any]  # the whole record, for tables and --json

    @property
    def ready(self) -> bool:
        return self.state in READY_STATES


def _int_field(path: Path, where: str, item: dict, key: str) -> int:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadFileError(path, f"{where} has no valid {key!r} ({value!r})",
                           hint="rerun `dbgfwd attach`, which rewrites it")
    return value


def _rank_record(path: Path, index: int, item: Any) -> SessionRank:
    where = f"ranks[{index}]"
    if not isinstance(item, dict):
        raise BadFileError(path, f"{where} is not an object")
    node = item.get("target_name") or item.get("node")
    root = item.get("remote_root")
    return SessionRank(
        rank=_int_field(path, where, item, "rank"), local_port=_int_field(path, where, item, "local_port"),
        local_rank=item["local_rank"] if isinstance(item.get("local_rank"), int) else 0,
        node=node if isinstance(node, str) and node else "?", state=str(item.get("state") or ""),
        remote_root=root if isinstance(root, str) and root else None, row=item)


@dataclass(frozen=True)
class Session:
    data: dict[str, Any]
    path: Path
    mtime: float | None = None  # when the attach last marked the file fresh (an unchanged state is touched)

    @property
    def pid(self) -> int:
        return int(self.data.get("pid", 0))

    @property
    def alive(self) -> bool:
        """The attach that wrote this file still runs: its pid is alive, is ours, and (where the system
        says when processes start) is the same process, not a later one that got the pid again."""
        pid = self.pid
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False  # gone, or another user's process that reuses the pid: our attach runs as us
        if self.data.get("uid") not in (None, os.getuid()):
            return False
        started = platform.process_start(pid)
        if started is not None and self.data.get("pid_start") != started:
            return False
        # The attach of this workspace holds its lock for its whole life, whatever pid the file names.
        holder = attach_running(self.path.parent.parent)
        if holder is None:
            return True  # cannot tell: the pid is all there is to go on
        return holder is not False and (holder is True or holder == pid)

    @property
    def stale_for(self) -> float | None:
        """Seconds since the attach last refreshed this file, when that is longer than it ever waits
        (it is stopped or hung); None while it keeps it fresh."""
        updated = self.data.get("updated")
        if not isinstance(updated, (int, float)):
            return None
        age = time.time() - max(updated, self.mtime or 0.0)
        return age if age > STALE_AFTER else None

    @property
    def ranks(self) -> list[SessionRank]:
        """Every rank record, checked (BadFileError names the first bad one)."""
        ranks = self.data.get("ranks", [])
        if not isinstance(ranks, list):
            raise BadFileError(self.path, "has no list of ranks", hint="rerun `dbgfwd attach`, which rewrites it")
        return [_rank_record(self.path, i, item) for i, item in enumerate(ranks)]


def read_session(workspace: Path) -> Session | None:
    """The session recorded in `workspace`, or None when there is none. Read defensively: the file belongs
    to another dbgfwd process and may be from another version."""
    path = session_path(workspace)
    try:
        mtime = os.stat(path).st_mtime
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadFileError(path, f"cannot be read ({exc})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BadFileError(path, "is not valid JSON", getattr(exc, "lineno", None), getattr(exc, "colno", None),
                           hint="rerun `dbgfwd attach`, which rewrites it") from None
    if not isinstance(data, dict):
        raise BadFileError(path, "is not a dbgfwd session file (not an object)",
                           hint="stop any running attach and delete it")
    return Session(data, path, mtime)
