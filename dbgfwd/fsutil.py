"""Atomic, permission-aware file writes: nothing is ever half-written.

Folders are never created here beyond the file's own folder (`.vscode/`, `.dbgfwd/`): a typo in a path
must not grow a directory tree. Failures become DbgfwdErrors saying what could not be written and why.
"""

from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from dbgfwd.errors import AuthError, DbgfwdError, ExitCode, NotFoundPathError


@dataclass(frozen=True)
class Write:
    """One file to write: its new bytes and mode; `old` is what it held (None: it did not exist)."""

    path: Path
    data: bytes
    mode: int = 0o600
    old: bytes | None = None


def write_error(path: Path, exc: OSError, hint: str | None = None) -> DbgfwdError:
    """The user-facing error for an OSError met while writing `path`."""
    reason = exc.strerror or str(exc)
    if isinstance(exc, PermissionError) or exc.errno in (errno.EPERM, errno.EACCES, errno.EROFS):
        return AuthError(f"cannot write {path}: {reason}; nothing was written",
                         hint=hint or f"make {path.parent} and {path.name} writable for you (an immutable or "
                                      "read-only file counts too), or write elsewhere")
    if isinstance(exc, FileNotFoundError):
        return NotFoundPathError(f"cannot write {path}: its folder {path.parent} does not exist; nothing was written",
                                 hint=hint or "create the folder, or fix the path")
    return DbgfwdError(f"cannot write {path}: {reason}; nothing was written", hint=hint or "free space or fix "
                       "the folder, then retry", code=ExitCode.BAD_FILE)


def _ensure_folder(path: Path) -> None:
    """The file's own folder may be created, nothing above it."""
    parent = path.parent
    if not parent.is_dir():
        parent.mkdir(exist_ok=True)  # FileNotFoundError when its own parent is missing: never a tree


# Temp files between their creation and their rename (or removal). A process that must end before its writer
# thread is done (lifecycle's emergency exit after a signal) removes them: no `.launch.json.*.tmp` is left.
_inflight: set[str] = set()
_inflight_lock = threading.Lock()
_ending = False


def _new_temp(path: Path) -> tuple[int, str]:
    import tempfile  # here: `dbgfwd status` reads state and never writes (tempfile imports random, ~5 ms)

    with _inflight_lock:
        if _ending:
            raise OSError(errno.ECANCELED, "dbgfwd is ending: nothing more is written")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        _inflight.add(tmp)
    return fd, tmp


def _settled(tmp: str) -> None:
    with _inflight_lock:
        _inflight.discard(tmp)


def remove_temp_files(timeout: float = 0.5) -> None:
    """The process ends now: remove every temp file still being written, and refuse new ones."""
    global _ending
    if not _inflight_lock.acquire(timeout=timeout):
        return
    try:
        _ending = True
        for tmp in _inflight:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        _inflight.clear()
    finally:
        _inflight_lock.release()


def _replace(tmp: str, path: Path) -> None:
    os.replace(tmp, path)
    _settled(tmp)


def _stage(item: Write) -> str:
    """The new content in a temp file beside the target, synced; its path."""
    _ensure_folder(item.path)
    fd, tmp = _new_temp(item.path)
    try:
        os.fchmod(fd, item.mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(item.data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    _settled(path)


def write_all(items: Sequence[Write]) -> None:
    """Write every file or none: all are staged first; they are renamed into place in order, and a failed
    rename puts back the ones already replaced. Raises a DbgfwdError (see `write_error`)."""
    staged: list[str] = []
    done: list[Write] = []
    current: Path | None = None
    try:
        for item in items:
            current = item.path
            staged.append(_stage(item))
        for item, tmp in zip(items, staged):
            current = item.path
            _replace(tmp, item.path)
            done.append(item)
    except OSError as exc:
        for tmp in staged:
            _unlink(tmp)
        for item in reversed(done):
            _restore(item)
        raise write_error(current or Path("."), exc) from None
    except BaseException:
        for tmp in staged:
            _unlink(tmp)
        raise


def _restore(item: Write) -> None:
    """Undo one replaced file (best effort: its folder accepted a rename a moment ago)."""
    try:
        if item.old is None:
            _unlink(item.path)
        else:
            tmp = _stage(Write(item.path, item.old, item.mode))
            _replace(tmp, item.path)
    except OSError:
        pass


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` via a temp file in the same directory, fsync, then rename over it.

    A reader (or a crash, or SIGTERM) sees either the old file or the new one, never a partial one.
    Raises OSError (callers that face users use `write_all`, which explains it)."""
    path = Path(path)
    tmp = _stage(Write(path, data, mode))
    try:
        _replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str, mode: int = 0o600) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)
