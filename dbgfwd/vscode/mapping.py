"""Will breakpoints bind? The program a rank runs, mapped back through pathMappings, must exist locally.

"Breakpoints are not hit" is the first thing remote-debugging users report, and it is almost always the
mapping. From a rank's marker (its working directory and what it runs) this says, in one line, when the
file the user will set breakpoints in cannot be where VS Code looks for it, and which --local-root would
work when the file is found elsewhere under the workspace.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

WORKSPACE_FOLDER = "${workspaceFolder}"
_SKIP = {".git", ".venv", "venv", "node_modules", "__pycache__", ".dbgfwd", ".tox", ".mypy_cache"}
_MAX_DEPTH = 4
_MAX_VISITED = 20000


def remote_program(cwd: str, program: str) -> tuple[str, bool]:
    """(the file the rank runs as a POSIX path on the rank, whether it is a module's guess). `python -m
    pkg.train` runs pkg/train.py (or pkg/train/__main__.py) found from the working directory."""
    if program.endswith(".py") or "/" in program:
        return posixpath.normpath(posixpath.join(cwd, program)), False
    return posixpath.join(cwd, *program.split(".")) + ".py", True


def check(workspace: Path, local_root: str, remote_root: str | None, cwd: str | None,
          program: str | None) -> str | None:
    """One warning line when breakpoints in the rank's program will not bind with this mapping; None when
    they will (or when nothing is known to check)."""
    if not cwd or not program or program == "-c":
        return None
    path, is_module = remote_program(cwd, program)
    name = program if is_module else posixpath.basename(path)
    if remote_root is None:
        return None  # no mapping: the same paths on both sides (debugpy's default); nothing to compare
    if Path(path).is_file():
        return None  # the very file is here (ranks on this machine, a shared file system): it binds as is
    rel = posixpath.relpath(path, remote_root)
    if rel.startswith(".."):
        return (f"breakpoints in {name} will not bind: the ranks run {path}, outside the source root {remote_root} "
                "(installed package code binds only with a mapping for its site-packages folder); pass "
                "--remote-root")
    local = Path(local_root.replace(WORKSPACE_FOLDER, str(workspace))).expanduser()
    if (local / rel).is_file() or (is_module and (local / rel[:-3] / "__main__.py").is_file()):
        return None
    found = _find(workspace, rel)
    if found is not None:
        suggestion = WORKSPACE_FOLDER + ("/" + found if found else "")
        return (f"breakpoints in {name} will not bind: there is no {rel} under {local_root}, but there is one "
                f"under {suggestion}; pass --local-root '{suggestion}'")
    return (f"breakpoints in {name} will not bind: there is no {rel} under {local_root} (the ranks run {path}); "
            "open the project's folder in VS Code, or pass --local-root/--remote-root")


def _find(workspace: Path, rel: str) -> str | None:
    """The folder under `workspace` (relative, POSIX; "" for the workspace itself) where `rel` exists,
    searching a few levels down and up (the user opened the repo's parent, or a subfolder)."""
    visited = 0
    for base, dirs, _files in os.walk(workspace):
        depth = len(Path(base).relative_to(workspace).parts)
        dirs[:] = [d for d in dirs if d not in _SKIP and not d.startswith(".")] if depth < _MAX_DEPTH else []
        visited += 1
        if visited > _MAX_VISITED:
            return None
        if (Path(base) / rel).is_file():
            where = Path(base).relative_to(workspace).as_posix()
            return "" if where == "." else where
    return None
