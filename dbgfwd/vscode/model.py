"""What the VS Code writer is asked to write, and what it reports back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AttachEntry:
    """One rank's attach config."""

    rank: int
    local_port: int
    node: str
    local_rank: int
    remote_root: str | None = None  # inferred for this rank (e.g. its working directory); LaunchOptions' wins
    host: str = "127.0.0.1"
    program: str | None = None  # what the rank runs (its marker), to check that breakpoints will bind


@dataclass(frozen=True)
class LaunchOptions:
    local_root: str = "${workspaceFolder}"
    remote_root: str | None = None  # the user's explicit root, for every rank; None: each rank's inferred one
    just_my_code: bool | None = None  # None: not written, so the user's debugpy.debugJustMyCode setting applies
    compounds: tuple[tuple[int, ...], ...] = ()  # extra compounds, one per rank subset
    compound_per_node: bool = False
    wait_task: bool = True  # compounds get a preLaunchTask running `dbgfwd wait` (tasks.json)
    wait_command: str = "dbgfwd"  # how that task invokes dbgfwd ("python -m dbgfwd" works too)
    workspace: str | None = None  # set when launch.json is not in <workspace>/.vscode: the task must be told
    job_port: int | None = None  # the running attach's job session: write the "dbgfwd: job" config for it


@dataclass(frozen=True)
class WriteResult:
    path: Path
    changed: bool
    backup: Path | None  # the backup made by this call (only the first time a file is modified)
    tasks_path: Path | None
    tasks_changed: bool
    warnings: tuple[str, ...] = ()  # e.g. a user's compound naming configurations that are gone


@dataclass(frozen=True)
class FileChange:
    """A file's text before (None: did not exist) and after the update."""

    path: Path
    before: str | None
    after: str
    raw: bytes | None = None  # the exact bytes read, to detect a concurrent edit before writing

    @property
    def changed(self) -> bool:
        if self.before is None and not self.after:
            return False  # nothing to write where nothing was: never create an empty file
        return self.before != self.after
