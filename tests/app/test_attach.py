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
    assert task_workspace(tmp_path / "x" / ".vscode" / "launch.json", tmp_path) == str(tmp_path.resolve())


def test_wait_command_prefers_this_installation(monkeypatch, tmp_path):
    import sys

    from dbgfwd.vscode import tasks as session

    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "dbgfwd").write_text("#!/bin/sh\n")
    (bin_dir / "dbgfwd").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)  # a venv's python is a symlink elsewhere
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", str(bin_dir))
    assert session.wait_command() == "dbgfwd"
    monkeypatch.setenv("PATH", str(tmp_path))  # another dbgfwd, or none, on PATH
    assert session.wait_command() == f"{bin_dir / 'python'} -m dbgfwd"
