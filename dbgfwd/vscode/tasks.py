"""How the VS Code wait task runs dbgfwd, and which workspace it names."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def wait_command() -> str:
    """How a VS Code task should run dbgfwd: `dbgfwd` when that is this installation, else this Python."""
    found = shutil.which("dbgfwd")
    # Compare the folders as named, not resolved: a venv's python is a symlink to the base interpreter.
    if found and Path(os.path.abspath(found)).parent == Path(os.path.abspath(sys.executable)).parent:
        return "dbgfwd"
    return f"{shlex.quote(sys.executable)} -m dbgfwd"


def task_workspace(launch_json: Path, workspace: Path) -> str | None:
    """The workspace to hand the wait task when VS Code's folder (launch.json's) is not the workspace."""
    if Path(launch_json).resolve().parent.parent == Path(workspace).resolve():
        return None
    return str(Path(workspace).resolve())
