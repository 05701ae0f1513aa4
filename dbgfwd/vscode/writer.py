"""Merge dbgfwd's entries into launch.json and tasks.json: atomically, with a one-time backup.

A file that does not parse is never written; the error names its line and column. Only entries
carrying dbgfwd's ownership marker (see `generate`) are replaced; every other byte is kept.
"""

from __future__ import annotations

import difflib
import json
import os
import stat
from pathlib import Path
from typing import Sequence

from dbgfwd import templates
from dbgfwd.errors import BadFileError, NotFoundPathError, UntrustedPathError
from dbgfwd.fsutil import Write, write_all
from dbgfwd.vscode.edit import ListUpdate, merge_lists, render_document
from dbgfwd.vscode.generate import Generated, generate, owns_launch_entry, owns_task
from dbgfwd.vscode.jsonc import JsoncError, position
from dbgfwd.vscode.model import AttachEntry, FileChange, LaunchOptions, WriteResult

BACKUP_SUFFIX = ".dbgfwd-backup"
NEW_FILE_MODE = 0o644  # launch.json/tasks.json are ordinary workspace files (ports only, no secrets)
_RETRIES = 3  # re-plan when the file changes between our read and our write (VS Code saved it)


def _read(path: Path) -> tuple[str | None, bytes | None]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except IsADirectoryError:
        raise BadFileError(path, "is a directory, not a JSON file") from None
    try:
        return raw.decode("utf-8"), raw
    except UnicodeDecodeError as exc:
        text = raw[:exc.start].decode("utf-8", errors="replace")
        line, col = position(text, len(text))
        raise BadFileError(path, "is not UTF-8 text", line, col,
                           hint="save it as UTF-8 and rerun; nothing was written") from None


def _merge(path: Path, text: str | None, raw: bytes | None, updates: list[ListUpdate],
           skeleton: str) -> FileChange:
    if text is None or text.strip() == "":
        if not any(u.wanted for u in updates):
            return FileChange(path, text, text or "", raw) if text is not None else FileChange(path, None, "", None)
        values = {u.key: list(u.wanted) for u in updates}
        return FileChange(path, text, render_document(templates.load_json(skeleton, values)), raw)
    try:
        after = merge_lists(text, updates)
    except JsoncError as exc:
        raise BadFileError(path, exc.problem, exc.line, exc.column,
                           hint="fix it (VS Code marks the spot) and rerun; nothing was written") from None
    return FileChange(path, text, after, raw)


def resolve(path: Path) -> Path:
    """Write through a symlinked launch.json to its target instead of replacing the link; but never create
    folders for a link's target (a link can point anywhere): its folder must exist."""
    resolved = Path(os.path.realpath(path))
    if os.path.islink(path) and not resolved.parent.is_dir():
        raise UntrustedPathError(f"{path} is a link to {resolved}, whose folder does not exist; nothing was written",
                                 hint="fix or remove the link")
    return resolved


def check_target(launch_path: Path) -> None:
    """launch.json may go in an existing folder, or in a `.vscode/` dbgfwd creates inside an existing one;
    a typo never grows a folder tree (NotFoundPathError, exit 8)."""
    folder = Path(os.path.abspath(launch_path)).parent
    if folder.is_dir() or (folder.name == ".vscode" and folder.parent.is_dir()):
        return
    raise NotFoundPathError(f"cannot write {launch_path}: the folder {folder} does not exist",
                            hint="create it, or fix --launch-json / --workspace")


def _document(text: str | None):
    """The value of a JSONC document, or None (empty, or it does not parse: the merge reports that). A file
    without comments or trailing commas is plain JSON, parsed in C (a 1024-rank launch.json is large)."""
    from dbgfwd.vscode.jsonc import loads

    if not text or not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return loads(text)
    except JsoncError:
        return None


def _user_names(doc, key: str, name_key: str, owned) -> frozenset[str]:
    """The names (or labels) of the user's own entries under `key` of a parsed document."""
    items = doc.get(key) if isinstance(doc, dict) else None
    return frozenset(str(i[name_key]) for i in items or () if isinstance(i, dict) and not owned(i)
                     and isinstance(i.get(name_key), str))


def plan_changes(launch_path: Path, entries: Sequence[AttachEntry], options: LaunchOptions,
                 tasks_path: Path | None = None, generated: Generated | None = None) -> list[FileChange]:
    """The launch.json change and (when wait tasks are involved) the tasks.json change."""
    given, launch_path = Path(os.path.abspath(launch_path)), resolve(launch_path)
    text, raw = _read(launch_path)
    tasks_path = resolve(tasks_path or given.parent / "tasks.json")  # beside launch.json as named, not its target
    ttext, traw = _read(tasks_path)
    gen = generated
    if gen is None:
        doc = _document(text)
        gen = generate(
            entries, options,
            taken=_user_names(doc, "configurations", "name", owns_launch_entry) |
            _user_names(doc, "compounds", "name", owns_launch_entry),
            taken_labels=_user_names(_document(ttext), "tasks", "label", owns_task))
    changes = [_merge(launch_path, text, raw, [
        ListUpdate("configurations", gen.configurations, owns_launch_entry),
        ListUpdate("compounds", gen.compounds, owns_launch_entry),
    ], "launch.json")]
    if gen.tasks or ttext is not None:  # also to remove tasks a previous run wrote
        changes.append(_merge(tasks_path, ttext, traw, [ListUpdate("tasks", gen.tasks, owns_task)],
                              "tasks.json"))
    return changes


def dangling(change: FileChange) -> list[str]:
    """One warning per user compound that names configurations the file no longer has (after dbgfwd
    wrote fewer ranks): VS Code would fail at launch with "Could not find launch configuration"."""
    doc = _document(change.after)
    if not isinstance(doc, dict):
        return []
    names = {c.get("name") for c in doc.get("configurations") or () if isinstance(c, dict)}
    out = []
    for compound in doc.get("compounds") or ():
        if not isinstance(compound, dict) or owns_launch_entry(compound):
            continue
        members = [m if isinstance(m, str) else (m.get("name") if isinstance(m, dict) else None)
                   for m in compound.get("configurations") or ()]
        missing = [m for m in members if m and m not in names]
        if missing:
            out.append(f"your compound {compound.get('name')!r} in {change.path} names configurations that no "
                       f"longer exist: {', '.join(repr(m) for m in missing)}; VS Code will not start it")
    return out


def render_diff(changes: Sequence[FileChange]) -> str:
    """A unified diff of every change (empty when nothing would change)."""
    out = []
    for change in changes:
        if not change.changed:
            continue
        before = (change.before or "").splitlines(keepends=True)
        after = change.after.splitlines(keepends=True)
        old_name = str(change.path) if change.before is not None else "/dev/null"
        for line in difflib.unified_diff(before, after, old_name, str(change.path)):
            out.append(line if line.endswith(("\n", "\r")) else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def _only_ours(text: str | None) -> bool:
    """The file holds nothing of the user's (dbgfwd made it): no backup is due."""
    if text is None or "//" in text or "/*" in text:
        return False
    doc = _document(text)
    if not isinstance(doc, dict) or not set(doc) <= {"version", "configurations", "compounds", "tasks"}:
        return False
    items = [i for key in ("configurations", "compounds", "tasks") for i in (doc.get(key) or [])]
    return all(owns_launch_entry(i) or owns_task(i) for i in items)


def _writes(change: FileChange) -> list[Write]:
    """The writes for one change: the file, preceded by a backup of the user's original the first time
    (only of a file that existed and held something)."""
    out = []
    mode = NEW_FILE_MODE
    if change.raw is not None:
        mode = stat.S_IMODE(change.path.stat().st_mode)
        candidate = change.path.with_name(change.path.name + BACKUP_SUFFIX)
        if change.raw.strip() and not _only_ours(change.before) and not candidate.exists():
            out.append(Write(candidate, change.raw, 0o600, None))
    out.append(Write(change.path, change.after.encode("utf-8"), mode, change.raw))
    return out


def _unchanged_on_disk(change: FileChange) -> bool:
    try:
        return change.path.read_bytes() == change.raw
    except FileNotFoundError:
        return change.raw is None


def update_launch_json(launch_path: Path, entries: Sequence[AttachEntry], options: LaunchOptions,
                       tasks_path: Path | None = None, dry_run: bool = False) -> WriteResult:
    """Make launch.json (and tasks.json) hold exactly dbgfwd's entries for `entries`.

    Raises BadFileError (nothing written) when a file does not parse.
    """
    for _attempt in range(_RETRIES):
        changes = plan_changes(launch_path, entries, options, tasks_path)
        if dry_run or all(_unchanged_on_disk(c) for c in changes if c.changed):
            break
    else:
        raise BadFileError(resolve(launch_path), "keeps changing while dbgfwd updates it",
                           hint="save your edits and rerun")
    launch, tasks = changes[0], (changes[1] if len(changes) > 1 else None)
    backup = None
    if not dry_run:
        # tasks.json first: a compound must never name a preLaunchTask that does not exist yet. Both files
        # or neither: a failed launch.json write puts tasks.json (and a new backup) back.
        writes = (_writes(tasks) if tasks is not None and tasks.changed else []) + \
            (_writes(launch) if launch.changed else [])
        write_all(writes)
        backup = next((w.path for w in writes if w.path.name.endswith(BACKUP_SUFFIX)
                       and w.path.name.startswith(launch.path.name)), None)
    return WriteResult(path=launch.path, changed=launch.changed, backup=backup,
                       warnings=tuple(dangling(launch)) if launch.changed else (),
                       tasks_path=tasks.path if tasks is not None else None,
                       tasks_changed=bool(tasks and tasks.changed))
