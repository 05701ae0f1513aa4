"""attach's launch.json writer: explicit options beat inferred ones; rewrites only on plan changes."""

from __future__ import annotations

import json

from dbgfwd.app.attach import LaunchWriter
from dbgfwd.app.options import AttachOptions
from dbgfwd.engine import RankState, RankStatus
from dbgfwd.plan.layout import PlannedRank
from dbgfwd.ui.console import Console
from dbgfwd.vscode.tasks import task_workspace
from tests.support.cli import strip_jsonc


def _status(rank, port, root):
    p = PlannedRank(rank=rank, node="n", node_index=0, local_rank=rank, remote_port=5678 + rank, local_port=port)
    return RankStatus(planned=p, target_name="pod-a", target_status="Running", state=RankState.READY, reason="",
                      clients=0, connections=0, failures=0, bytes_up=0, bytes_down=0, remote_root=root)


def _mappings(path):
    doc = json.loads(strip_jsonc(path.read_text()))
    return {c["connect"]["port"]: c.get("pathMappings") for c in doc["configurations"]}


def test_explicit_remote_root_wins_over_inferred(tmp_path):
    launch = tmp_path / ".vscode" / "launch.json"
    w = LaunchWriter(AttachOptions(workspace=tmp_path, launch_json=launch, remote_root="/explicit"), Console())
    w([_status(0, 7000, "/inferred")])
    assert _mappings(launch)[7000][0]["remoteRoot"] == "/explicit"
    w2 = LaunchWriter(AttachOptions(workspace=tmp_path, launch_json=launch), Console())
    w2([_status(0, 7000, "/inferred")])
    assert _mappings(launch)[7000][0]["remoteRoot"] == "/inferred"


def test_state_changes_do_not_rewrite_launch_json(tmp_path):
    launch = tmp_path / ".vscode" / "launch.json"
    w = LaunchWriter(AttachOptions(workspace=tmp_path, launch_json=launch), Console())
    w([_status(0, 7000, None)])
    before = launch.stat().st_mtime_ns
    w([_status(0, 7000, None)])
    assert launch.stat().st_mtime_ns == before


def test_task_workspace_only_when_outside(tmp_path):
    assert task_workspace(tmp_path / ".vscode" / "launch.json", tmp_path) is None
    # relative to VS Code's folder, so a shared or moved checkout still works
    assert task_workspace(tmp_path / "x" / ".vscode" / "launch.json", tmp_path) == "${workspaceFolder}/.."
    assert task_workspace(tmp_path / ".vscode" / "launch.json", tmp_path / "sub") == "${workspaceFolder}/sub"


def test_wait_command_is_portable_when_dbgfwd_is_on_path_and_says_so_when_not(monkeypatch, tmp_path):
    import sys

    from dbgfwd.vscode import tasks as session

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dbgfwd").write_text("#!/bin/sh\n")
    (bin_dir / "dbgfwd").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert session.wait_command() == "dbgfwd"  # any dbgfwd on PATH: no absolute path in tasks.json
    assert session.portability_warning("dbgfwd") is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    command = session.wait_command()
    assert command.endswith(" -m dbgfwd") and sys.executable in command
    warning = session.portability_warning(command)
    assert "not on PATH" in warning and "pipx" in warning


# ---- nothing half-written (hardening) ----

def test_no_ranks_writes_no_file(tmp_path):
    launch = tmp_path / ".vscode" / "launch.json"
    w = LaunchWriter(AttachOptions(workspace=tmp_path, launch_json=launch), Console())
    w([])
    assert not launch.exists() and not (tmp_path / ".vscode" / "tasks.json").exists()


def test_first_write_in_a_fresh_folder_makes_no_backup(tmp_path):
    launch = tmp_path / ".vscode" / "launch.json"
    w = LaunchWriter(AttachOptions(workspace=tmp_path, launch_json=launch), Console())
    w([_status(0, 7000, None)])
    w([_status(0, 7000, None), _status(1, 7001, None)])
    assert sorted(p.name for p in launch.parent.iterdir()) == ["launch.json", "tasks.json"]


def test_an_unparsable_launch_json_is_said_once_and_picked_up_when_fixed(tmp_path, capsys):
    launch = tmp_path / ".vscode" / "launch.json"
    launch.parent.mkdir()
    launch.write_text('{"configurations": [ {"name": "mine",, } ]}')
    problems = []
    w = LaunchWriter(AttachOptions(workspace=tmp_path, launch_json=launch), Console(),
                     on_problem=lambda: problems.append(w.problem))
    w.RETRY = 0
    w([_status(0, 7000, None)])
    for _ in range(3):
        w.retry()
    err = capsys.readouterr().err
    assert err.count("NOT updated") == 1 and "launch.json:1:" in err, err
    assert problems == [w.problem] and "NOT updated" in w.problem
    assert launch.read_text() == '{"configurations": [ {"name": "mine",, } ]}'  # untouched
    launch.write_text('{"configurations": [ {"name": "mine"} ]}')
    w.retry()
    assert w.problem is None and problems[-1] is None
    names = [c["name"] for c in json.loads(strip_jsonc(launch.read_text()))["configurations"]]
    assert names[0] == "mine" and any(n.startswith("dbgfwd: rank 0") for n in names)
    assert "writable again" in capsys.readouterr().err


def test_launch_json_and_tasks_json_are_written_both_or_neither(tmp_path, monkeypatch):
    """The rename of launch.json fails after tasks.json (and the backup) were put in place: both go back."""
    import os

    launch = tmp_path / ".vscode" / "launch.json"
    launch.parent.mkdir()
    original = '{"version": "0.2.0", "configurations": [{"name": "mine", "type": "debugpy"}]}\n'
    launch.write_text(original)
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("launch.json"):
            raise PermissionError(1, "Operation not permitted")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    w = LaunchWriter(AttachOptions(workspace=tmp_path, launch_json=launch), Console())
    w.RETRY = 0
    w([_status(0, 7000, None)])
    monkeypatch.setattr(os, "replace", real_replace)
    assert w.problem and "Operation not permitted" in w.problem
    assert sorted(p.name for p in launch.parent.iterdir()) == ["launch.json"], list(launch.parent.iterdir())
    assert launch.read_text() == original
    w.retry()  # the next try succeeds: the failed write was not recorded as done
    assert w.problem is None and "dbgfwd: rank 0" in launch.read_text()
    assert (launch.parent / "launch.json.dbgfwd-backup").read_text() == original
