"""Workspace session state: what the running `dbgfwd attach` is doing, for `status` and `wait`.

`<workspace>/.dbgfwd/session.json` (mode 0600) is rewritten atomically by the attach process.
Secrets never go in it: targets are described by names, never by tokens or URLs with credentials.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbgfwd import envvars
from dbgfwd.errors import BadFileError
from dbgfwd.fsutil import atomic_write_text

STATE_DIR = ".dbgfwd"
SESSION_FILE = "session.json"
PORTS_FILE = "ports.json"
SESSION_VERSION = 1
READY_STATES = ("ready", "connected")


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


def ensure_state_dir(workspace: Path) -> None:
    """Create .dbgfwd/ (0700) with a .gitignore so its files are never committed."""
    d = state_dir(workspace)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    if d.stat().st_mode & 0o077:
        os.chmod(d, 0o700)  # made earlier (by hand, an old version, a permissive umask): only us
    gitignore = d / ".gitignore"
    if not gitignore.exists():
        atomic_write_text(gitignore, "*\n", mode=0o644)


def _redacted(value: Any) -> Any:
    """Provider messages and target details land here: pass every string through the log redaction."""
    from dbgfwd.console import redact

    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v) for v in value]
    return value


def write_session(workspace: Path, payload: dict[str, Any]) -> None:
    ensure_state_dir(workspace)
    data = {"version": SESSION_VERSION, "pid": os.getpid(), "updated": time.time(), **_redacted(payload)}
    atomic_write_text(session_path(workspace), json.dumps(data, indent=2) + "\n", mode=0o600)


def remove_session(workspace: Path) -> None:
    try:
        session_path(workspace).unlink()
    except FileNotFoundError:
        pass


@dataclass(frozen=True)
class Session:
    data: dict[str, Any]
    path: Path

    @property
    def pid(self) -> int:
        return int(self.data.get("pid", 0))

    @property
    def alive(self) -> bool:
        pid = self.pid
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    @property
    def ranks(self) -> list[dict[str, Any]]:
        return list(self.data.get("ranks", []))


def read_session(workspace: Path) -> Session | None:
    path = session_path(workspace)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise BadFileError(path, f"not a dbgfwd session file ({exc})",
                           hint="stop any running attach and delete it") from None
    return Session(data, path)
