"""Merging into real-world launch.json/tasks.json: user bytes kept, ours replaced, bad files untouched."""

import os
import stat

import pytest

from dbgfwd.errors import BadFileError, ExitCode
from dbgfwd.vscode import (
    LaunchOptions,
    generate,
    owns_launch_entry,
    owns_task,
    plan_changes,
    render_diff,
    update_launch_json,
)
from dbgfwd.vscode.jsonc import loads, parse
from dbgfwd.vscode.model import AttachEntry
from dbgfwd.vscode.writer import BACKUP_SUFFIX
from tests.vscode.conftest import entries, fixture_bytes

OPTS = LaunchOptions(remote_root="/workspace", compounds=((0, 1),), compound_per_node=True)
USER_FILES = ["user_launch.jsonc", "compact_launch.jsonc", "no_lists_launch.jsonc"]


def user_spans(text: str) -> list[str]:
    """Source text of every element the user owns in configurations/compounds, and every comment."""
    root = parse(text)
    out = []
    for key in ("configurations", "compounds"):
        node = root.member(key)
        for item in node.items if node else []:
            if not owns_launch_entry(item.value):
                out.append(text[item.start:item.end])
    return out


def comments(text: str) -> list[str]:
    import re
    return re.findall(r"//[^\r\n]*|/\*.*?\*/", text, re.S)


@pytest.mark.parametrize("name", USER_FILES)
@pytest.mark.parametrize("crlf", [False, True])
def test_user_content_is_kept_byte_for_byte(vscode_dir, name, crlf):
    original = fixture_bytes(name, crlf)
    path = vscode_dir / "launch.json"
    path.write_bytes(original)
    result = update_launch_json(path, entries(4), OPTS)
    assert result.changed and result.tasks_changed
    new = path.read_bytes().decode()
    old = original.decode()
    for span in user_spans(old):
        assert span in new
    assert comments(new) == comments(old)
    assert user_spans(new) == user_spans(old)
    # The user's values, in order, plus exactly ours.
    data = loads(new)
    gen = generate(entries(4), OPTS)
    assert [c for c in data["configurations"] if owns_launch_entry(c)] == gen.configurations
    assert [c for c in data["compounds"] if owns_launch_entry(c)] == gen.compounds
    if crlf:
        assert b"\n" not in new.encode().replace(b"\r\n", b"")  # no bare LF crept in
    # Idempotent: the second run writes nothing.
    mtime = path.stat().st_mtime_ns
    again = update_launch_json(path, entries(4), OPTS)
    assert not again.changed and not again.tasks_changed and path.stat().st_mtime_ns == mtime
    # Removing every rank takes all of ours out and gives back the user's file.
    update_launch_json(path, [], OPTS)
    back = path.read_bytes()
    if name == "user_launch.jsonc":
        assert back == original
    else:  # lists dbgfwd had to add stay, empty
        assert loads(back.decode()) == {"configurations": [], "compounds": [], **loads(old)}
        assert comments(back.decode()) == comments(old) and user_spans(back.decode()) == user_spans(old)


def test_user_tasks_kept_and_wait_tasks_replaced(vscode_dir):
    original = fixture_bytes("user_tasks.jsonc")
    (vscode_dir / "tasks.json").write_bytes(original)
    path = vscode_dir / "launch.json"
    update_launch_json(path, entries(4), OPTS)
    tasks = loads((vscode_dir / "tasks.json").read_text())["tasks"]
    assert tasks[0]["label"] == "build"
    labels = [t["label"] for t in tasks if owns_task(t)]
    assert labels == ["dbgfwd: wait for all ranks", "dbgfwd: wait for ranks 0-1", "dbgfwd: wait for ranks 2-3"]
    compound_tasks = {c["preLaunchTask"] for c in loads(path.read_text())["compounds"]}
    assert compound_tasks == set(labels)
    update_launch_json(path, entries(4), LaunchOptions(wait_task=False))
    assert (vscode_dir / "tasks.json").read_bytes() == original
    assert all("preLaunchTask" not in c for c in loads(path.read_text())["compounds"])


def test_changing_one_port_rewrites_only_that_config(vscode_dir):
    path = vscode_dir / "launch.json"
    path.write_bytes(fixture_bytes("user_launch.jsonc"))
    update_launch_json(path, entries(4), OPTS)
    before = path.read_text()
    moved = entries(4)
    moved[2] = moved[2].__class__(**{**moved[2].__dict__, "local_port": 7777})
    diff = render_diff(plan_changes(path, moved, OPTS))
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == ['-\t\t\t\t"port": 6002', '+\t\t\t\t"port": 7777'], diff
    assert path.read_text() == before  # planning wrote nothing


def test_fewer_ranks_remove_their_entries(vscode_dir):
    path = vscode_dir / "launch.json"
    update_launch_json(path, entries(4), OPTS)
    update_launch_json(path, entries(2), OPTS)
    data = loads(path.read_text())
    assert [c["name"] for c in data["configurations"]] == ["dbgfwd: rank 0 (worker-0)", "dbgfwd: rank 1 (worker-0)"]
    assert all(n.endswith("(worker-0)") for c in data["compounds"] for n in c["configurations"])


def test_new_file_and_empty_file(vscode_dir):
    path = vscode_dir / "launch.json"
    update_launch_json(path, entries(1), LaunchOptions())
    assert loads(path.read_text())["version"] == "0.2.0"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not (vscode_dir / ("launch.json" + BACKUP_SUFFIX)).exists()  # nothing to back up
    path.write_text("  \n")
    result = update_launch_json(path, entries(1), LaunchOptions())
    assert result.changed and len(loads(path.read_text())["configurations"]) == 1


def test_backup_made_once_with_0600(vscode_dir):
    path = vscode_dir / "launch.json"
    original = fixture_bytes("user_launch.jsonc")
    path.write_bytes(original)
    os.chmod(path, 0o664)
    first = update_launch_json(path, entries(2), OPTS)
    assert first.backup == vscode_dir / ("launch.json" + BACKUP_SUFFIX)
    assert first.backup.read_bytes() == original
    assert stat.S_IMODE(first.backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o664  # the file keeps its mode
    second = update_launch_json(path, entries(3), OPTS)
    assert second.changed and second.backup is None
    assert first.backup.read_bytes() == original  # still the user's version


def test_symlinked_launch_json_stays_a_symlink(tmp_path, vscode_dir):
    real = tmp_path / "shared-launch.json"
    real.write_bytes(fixture_bytes("compact_launch.jsonc"))
    link = vscode_dir / "launch.json"
    link.symlink_to(real)
    update_launch_json(link, entries(1), LaunchOptions())
    assert link.is_symlink() and len(loads(real.read_text())["configurations"]) == 2


def test_dry_run_writes_nothing(vscode_dir):
    path = vscode_dir / "launch.json"
    result = update_launch_json(path, entries(2), OPTS, dry_run=True)
    assert result.changed and not path.exists() and not (vscode_dir / "tasks.json").exists()
    diff = render_diff(plan_changes(path, entries(2), OPTS))
    assert diff.startswith("--- /dev/null\n+++ ") and '+            "name": "dbgfwd: rank 1 (worker-0)",' in diff


BAD_DOCS = [
    ('{\n\t"configurations": [\n\t\t{"name": "x"}\n\t\t{"name": "y"}\n\t]\n}\n', 4, 3),
    ('{"configurations": [1, 2,, 3]}', 1, 26),
    ('{"configurations": {"not": "a list"}}', 1, 20),
    ('["not", "an", "object"]', 1, 1),
    ('{"configurations": [], "configurations": []}', 1, 42),
    ('{\r\n  "version": "0.2.0",\r\n  /* unterminated\r\n}', 3, 3),
    ('// only a comment\n', 2, 1),
]


@pytest.mark.parametrize("text, line, column", BAD_DOCS)
def test_invalid_documents_are_left_untouched(vscode_dir, text, line, column):
    path = vscode_dir / "launch.json"
    path.write_bytes(text.encode())
    with pytest.raises(BadFileError) as info:
        update_launch_json(path, entries(2), OPTS)
    err = info.value
    assert (err.line, err.column) == (line, column)
    assert f"launch.json:{line}:{column}: " in str(err) and err.code == ExitCode.BAD_FILE
    assert path.read_bytes() == text.encode()
    assert sorted(p.name for p in vscode_dir.iterdir()) == ["launch.json"]  # no backup, no tasks.json


def test_invalid_tasks_json_means_launch_json_untouched_too(vscode_dir):
    (vscode_dir / "tasks.json").write_text('{"tasks": [}')
    path = vscode_dir / "launch.json"
    path.write_bytes(fixture_bytes("compact_launch.jsonc"))
    with pytest.raises(BadFileError, match=r"tasks.json:1:12"):
        update_launch_json(path, entries(2), OPTS)
    assert path.read_bytes() == fixture_bytes("compact_launch.jsonc")


def test_not_utf8_is_refused_with_position(vscode_dir):
    path = vscode_dir / "launch.json"
    path.write_bytes(b'{\n  "name": "caf\xe9"\n}')
    with pytest.raises(BadFileError) as info:
        update_launch_json(path, entries(1), OPTS)
    assert (info.value.line, info.value.column) == (2, 15)


def test_dbgfwd_names_never_collide_with_the_users_entries(tmp_path):
    """VS Code resolves compound members and preLaunchTask by name: a user's entry named like one of
    dbgfwd's would be run from dbgfwd's compound. dbgfwd's take another name; the user's are untouched."""
    from dbgfwd.vscode.jsonc import loads as jloads

    vscode = tmp_path / ".vscode"
    vscode.mkdir()
    launch, tasks = vscode / "launch.json", vscode / "tasks.json"
    launch.write_text('{"configurations": [{"name": "dbgfwd: rank 0 (n)", "type": "python", "request": "launch"}],'
                      ' "compounds": [{"name": "dbgfwd: all ranks", "configurations": []}]}')
    tasks.write_text('{"version": "2.0.0", "tasks": [{"label": "dbgfwd: wait for all ranks", "command": "rm"}]}')
    update_launch_json(launch, [AttachEntry(0, 7000, "n", 0), AttachEntry(1, 7001, "n", 1)], LaunchOptions())
    doc, tdoc = jloads(launch.read_text()), jloads(tasks.read_text())
    user_config, *ours = doc["configurations"]
    assert user_config == {"name": "dbgfwd: rank 0 (n)", "type": "python", "request": "launch"}
    assert [c["name"] for c in ours] == ["dbgfwd: rank 0 (n) [dbgfwd]", "dbgfwd: rank 1 (n)"]
    compound = [c for c in doc["compounds"] if c["name"] != "dbgfwd: all ranks"][0]
    assert compound["name"] == "dbgfwd: all ranks [dbgfwd]"
    assert compound["configurations"] == ["dbgfwd: rank 0 (n) [dbgfwd]", "dbgfwd: rank 1 (n)"]
    labels = [t["label"] for t in tdoc["tasks"]]
    assert labels == ["dbgfwd: wait for all ranks", "dbgfwd: wait for all ranks [dbgfwd]"]
    assert compound["preLaunchTask"] == "dbgfwd: wait for all ranks [dbgfwd]"


def test_a_user_compound_left_naming_vanished_ranks_is_warned_about(tmp_path):
    vscode = tmp_path / ".vscode"
    vscode.mkdir()
    launch = vscode / "launch.json"
    update_launch_json(launch, [AttachEntry(r, 7000 + r, "n", r) for r in range(3)], LaunchOptions())
    text = launch.read_text().replace('"compounds": [', '"compounds": [{"name": "mine: 1 and 2", '
                                      '"configurations": ["dbgfwd: rank 1 (n)", "dbgfwd: rank 2 (n)"]},', 1)
    launch.write_text(text)
    result = update_launch_json(launch, [AttachEntry(r, 7000 + r, "n", r) for r in range(2)], LaunchOptions())
    assert len(result.warnings) == 1
    assert "'mine: 1 and 2'" in result.warnings[0] and "'dbgfwd: rank 2 (n)'" in result.warnings[0]
    assert "rank 1" not in result.warnings[0].split("exist:")[1]


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_a_comment_after_the_users_last_configuration_stays_on_its_line(tmp_path, eol):
    vscode = tmp_path / ".vscode"
    vscode.mkdir()
    launch = vscode / "launch.json"
    original = eol.join(['{', '    "version": "0.2.0",', '    "configurations": [', '        {',
                         '            "name": "mine",', '            "type": "debugpy",',
                         '            "request": "launch"', '        } // my last one', '    ]', '}', ''])
    launch.write_bytes(original.encode())
    for count in (2, 1, 3, 0):
        update_launch_json(launch, [AttachEntry(r, 7000 + r, "n", r) for r in range(count)], LaunchOptions())
        text = launch.read_bytes().decode()
        lines = text.split(eol)
        at = next(i for i, x in enumerate(lines) if "my last one" in x)
        assert lines[at].strip() in ("} // my last one", "}, // my last one"), (count, lines[at])
        assert '"name": "mine"' in "".join(lines[at - 4:at])  # still the line that closes the user's config
        doc = loads(text)
        assert [c["name"] for c in doc["configurations"]] == ["mine"] + [f"dbgfwd: rank {r} (n)" for r in range(count)]
        assert "\r\n" not in text.replace(eol, "") if eol == "\n" else text.count("\n") == text.count("\r\n")


CORPUS = USER_FILES + ["tabs_bom_inputs_launch.jsonc", "empty_arrays_launch.jsonc"]
# Files whose lists dbgfwd did not have to create: taking every rank out gives back the very bytes.
ROUND_TRIP = {"user_launch.jsonc", "tabs_bom_inputs_launch.jsonc"}


def _comment_lines(text: str) -> list[tuple[str, str]]:
    """(the last character before the comment on its line, or "" when it starts the line; the comment) for every
    comment: a comment that moved to a line of its own, or away from the token it followed, shows here (a list
    dbgfwd fills may spread over lines, so `[],` becomes `],`: still after the list's end)."""
    import re

    out = []
    for m in re.finditer(r"//[^\r\n]*|/\*.*?\*/", text, re.S):
        start = text.rfind("\n", 0, m.start()) + 1
        out.append((text[start:m.start()].strip().rstrip(",")[-1:], m.group(0)))
    return out


@pytest.mark.parametrize("name", CORPUS)
@pytest.mark.parametrize("crlf", [False, True])
def test_corpus_comments_stay_on_their_lines_through_every_update(vscode_dir, name, crlf):
    """Real-world shapes (comments everywhere, trailing commas, tabs, a BOM, `inputs`, empty lists, CRLF): through
    a run of updates (3 ranks with the job session, then 1, then 4), every comment keeps what precedes it on its
    line, the file stays parseable, and where the user had the lists, taking everything out restores the bytes."""
    original = fixture_bytes(name, crlf)
    path = vscode_dir / "launch.json"
    path.write_bytes(original)
    old = original.decode()
    for count, job in ((3, 7990), (1, None), (4, 7990)):
        update_launch_json(path, entries(count), LaunchOptions(job_port=job))
        text = path.read_bytes().decode()
        assert text.startswith("\ufeff") == old.startswith("\ufeff")
        doc = loads(text.lstrip("\ufeff"))
        assert [c["name"] for c in doc["configurations"] if owns_launch_entry(c)][:1] == \
            (["dbgfwd: job"] if job else ["dbgfwd: rank 0 (worker-0)"])
        assert _comment_lines(text) == _comment_lines(old), (count, text)
        assert user_spans(text.lstrip("\ufeff")) == user_spans(old.lstrip("\ufeff"))
        if crlf:
            assert b"\n" not in text.encode().replace(b"\r\n", b"")
    update_launch_json(path, [], LaunchOptions())
    back = path.read_bytes().decode()
    assert comments(back) == comments(old)  # a comment alone in a list dbgfwd emptied again stays too
    if name in ROUND_TRIP:
        assert path.read_bytes() == original


def test_documents_are_read_as_plain_json_when_they_are_and_as_jsonc_otherwise():
    """The reads that need only values (user names, dangling compounds, whether a backup is due) take the C JSON
    parser for a file without comments (a 1024-rank launch.json: 0.25 -> 0.04 s to write) and fall back to JSONC."""
    from dbgfwd.vscode.writer import _document

    assert _document('{"configurations": [{"name": "a"}]}') == {"configurations": [{"name": "a"}]}
    assert _document('{\n  // mine\n  "configurations": [{"name": "a",},],\n}') == {"configurations": [{"name": "a"}]}
    assert _document('{"configurations": [') is None
    assert _document("") is None and _document(None) is None
