"""How the VS Code wait task runs dbgfwd, and which workspace it names."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def wait_command() -> str:
    """How a VS Code task should run dbgfwd: plain `dbgfwd` when one is on PATH (portable: a committed or
    shared .vscode/, a dev container, Remote-SSH, a rebuilt venv), else this Python by its absolute path
    (see `portability_warning`)."""
    if shutil.which("dbgfwd"):
        return "dbgfwd"
    return f"{shlex.quote(sys.executable)} -m dbgfwd"


def portability_warning(command: str) -> str | None:
    """What to tell the user when the wait task had to name this Python by its absolute path."""
    if command == "dbgfwd":
        return None
    return (f"dbgfwd is not on PATH, so the wait task in tasks.json runs {command}: it breaks if .vscode/ is "
            "shared or the venv moves; put dbgfwd on PATH (activate the venv, or `pipx install`) and rerun")


def task_workspace(launch_json: Path, workspace: Path) -> str | None:
    """The workspace to hand the wait task when VS Code's folder (launch.json's) is not the workspace,
    relative to that folder (`${workspaceFolder}/...`) so the files stay portable."""
    folder = Path(launch_json).resolve().parent.parent
    ws = Path(workspace).resolve()
    if folder == ws:
        return None
    return "${workspaceFolder}/" + Path(os.path.relpath(ws, folder)).as_posix()
