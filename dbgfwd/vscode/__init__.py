"""Placeholder launch.json writer (plain JSON only); replaced by the JSONC-safe writer of issue 3."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from dbgfwd.errors import BadFileError
from dbgfwd.fsutil import atomic_write_text

OWNER_KEY = "dbgfwd"


@dataclass(frozen=True)
class AttachEntry:
    rank: int
    local_port: int
    node: str
    local_rank: int
    remote_root: str | None = None
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class LaunchOptions:
    local_root: str = "${workspaceFolder}"
    remote_root: str | None = None
    just_my_code: bool = False
    compounds: tuple[tuple[int, ...], ...] = ()
    compound_per_node: bool = False
    wait_task: bool = True
    wait_command: str = "dbgfwd"


@dataclass(frozen=True)
class WriteResult:
    path: Path
    changed: bool
    backup: Path | None = None
    tasks_path: Path | None = None
    tasks_changed: bool = False


def update_launch_json(launch_path: Path, entries: Sequence[AttachEntry], options: LaunchOptions,
                       tasks_path: Path | None = None, dry_run: bool = False) -> WriteResult:
    launch_path = Path(launch_path)
    doc = {"version": "0.2.0", "configurations": []}
    if launch_path.exists():
        try:
            doc = json.loads(launch_path.read_text())
        except ValueError as exc:
            raise BadFileError(launch_path, str(exc)) from None
    configs = [c for c in doc.get("configurations", []) if not c.get(OWNER_KEY)]
    for e in entries:
        cfg = {"name": f"dbgfwd: rank {e.rank} ({e.node})", "type": "debugpy", "request": "attach",
               "connect": {"host": e.host, "port": e.local_port}, "justMyCode": options.just_my_code,
               OWNER_KEY: {"rank": e.rank}}
        remote = e.remote_root or options.remote_root
        if remote:
            cfg["pathMappings"] = [{"localRoot": options.local_root, "remoteRoot": remote}]
        configs.append(cfg)
    doc["configurations"] = configs
    text = json.dumps(doc, indent=4) + "\n"
    old = launch_path.read_text() if launch_path.exists() else None
    changed = text != old
    if changed and not dry_run:
        atomic_write_text(launch_path, text, mode=0o644)
    return WriteResult(launch_path, changed)
