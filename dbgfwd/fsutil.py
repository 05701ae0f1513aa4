"""Atomic, permission-aware file writes: nothing is ever half-written.

Folders are never created here beyond the file's own folder (`.vscode/`, `.dbgfwd/`): a typo in a path
must not grow a directory tree. Failures become DbgfwdErrors saying what could not be written and why.
"""

from __future__ import annotations

import errno
import os
import tempfile
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


def _stage(item: Write) -> str:
    """The new content in a temp file beside the target, synced; its path."""
    _ensure_folder(item.path)
    fd, tmp = tempfile.mkstemp(prefix=f".{item.path.name}.", suffix=".tmp", dir=item.path.parent)
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
            os.replace(tmp, item.path)
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
            os.replace(tmp, item.path)
    except OSError:
        pass


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` via a temp file in the same directory, fsync, then rename over it.

    A reader (or a crash, or SIGTERM) sees either the old file or the new one, never a partial one.
    Raises OSError (callers that face users use `write_all`, which explains it)."""
    path = Path(path)
    tmp = _stage(Write(path, data, mode))
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str, mode: int = 0o600) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)
