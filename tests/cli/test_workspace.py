"""One workspace, one attach; typos and unwritable folders give one clear line and leave nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time


from dbgfwd.errors import ExitCode
from dbgfwd.workspace import state
from tests.support import require
from tests.support import cli


def _attach(ws, *extra, log):
    return cli.Background("attach", "--provider", "local", "--ranks", "2", "--workspace", str(ws), *extra, log=log)


def test_a_second_attach_in_the_same_workspace_is_refused_and_leaves_the_first_alone(tmp_path, port_block):
    ws = tmp_path / "ws"
    ws.mkdir()
    base = port_block(2)
    first = _attach(ws, "--base-port", str(base), log=tmp_path / "first.log")
    try:
        cli.wait_for(lambda: (ws / ".dbgfwd" / "session.json").exists(), 30, "the first session")
        before = (ws / ".vscode" / "launch.json").read_text()
        second = cli.run("attach", "--provider", "local", "--ranks", "2", "--base-port", str(base + 50),
                         "--workspace", str(ws), "--duration", "5")
        assert second.returncode == ExitCode.BUSY, second.stderr
        assert f"pid {first.proc.pid}" in second.stderr and len(second.stderr.strip().splitlines()) == 1
        assert (ws / ".vscode" / "launch.json").read_text() == before
        status = cli.run("status", "--json", "--workspace", str(ws))
        assert status.returncode == 0 and json.loads(status.stdout)["pid"] == first.proc.pid
    finally:
        assert first.stop() == ExitCode.INTERRUPTED, first.output()
    assert not (ws / ".dbgfwd" / "session.json").exists()
    # the lock died with its process: a new attach may start
    again = cli.run("attach", "--provider", "local", "--ranks", "1", "--base-port", str(base),
                    "--workspace", str(ws), "--duration", "0.5")
    assert again.returncode == 0, again.stderr


def test_status_does_not_trust_a_live_pid_in_a_session_file(tmp_path):
    state.write_session(tmp_path, {"provider": "local", "ranks": []})
    path = state.session_path(tmp_path)
    data = json.loads(path.read_text())
    data.update(pid=1, pid_start=None)  # pid 1 is alive, but it is no attach of this workspace
    path.write_text(json.dumps(data))
    res = cli.run("status", "--workspace", str(tmp_path))
    assert res.returncode == ExitCode.NO_SESSION, res.stdout
    # this process writes it and holds the lock, but another pid is named: not trusted either
    lock = state.lock_workspace(tmp_path)
    try:
        res = cli.run("status", "--workspace", str(tmp_path))
        assert res.returncode == ExitCode.NO_SESSION, res.stdout
        state.write_session(tmp_path, {"provider": "local", "ranks": []})
        assert cli.run("status", "--workspace", str(tmp_path)).returncode == 0
    finally:
        lock.release()


def test_typos_in_paths_create_nothing(tmp_path):
    missing = tmp_path / "nonexistent" / "ws"
    res = cli.run("attach", "--provider", "local", "--ranks", "1", "--workspace", str(missing), "--duration", "1")
    assert res.returncode == ExitCode.BAD_FILE and "does not exist" in res.stderr, res.stderr
    assert not (tmp_path / "nonexistent").exists()
    ws = tmp_path / "ws"
    ws.mkdir()
    res = cli.run("attach", "--provider", "local", "--ranks", "1", "--workspace", str(ws),
                  "--launch-json", str(tmp_path / "x" / "y" / "launch.json"), "--duration", "1")
    assert res.returncode == ExitCode.BAD_FILE, res.stderr
    assert str(tmp_path / "x" / "y") in res.stderr and "../" not in res.stderr
    assert not (tmp_path / "x").exists() and not (ws / ".dbgfwd").exists()
    res = cli.run("gen-launch", "--ranks", "2", "--workspace", str(missing))
    assert res.returncode == ExitCode.BAD_FILE and not (tmp_path / "nonexistent").exists()


def test_attach_with_no_ranks_and_a_fresh_folder_write_no_empty_files(tmp_path, port_block):
    ws = tmp_path / "ws"
    ws.mkdir()
    res = cli.run("attach", "--provider", "local", "--workspace", str(ws), "--duration", "1")
    assert res.returncode == ExitCode.NOT_FOUND, res.stderr
    assert not (ws / ".vscode" / "launch.json").exists()
    res = cli.run("attach", "--provider", "local", "--ranks", "2", "--base-port", str(port_block(2)),
                  "--workspace", str(ws), "--duration", "1")
    assert res.returncode == 0, res.stderr
    files = sorted(p.name for p in (ws / ".vscode").iterdir())
    assert files == ["launch.json", "tasks.json"], files
    assert "wrote 0" not in res.stderr


def _immutable(path, on: bool) -> bool:
    if not shutil.which("chattr"):
        return False
    return subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True).returncode == 0


def test_an_immutable_launch_json_is_reported_and_nothing_else_is_written(tmp_path):
    ws = tmp_path / "ws"
    (ws / ".vscode").mkdir(parents=True)
    launch = ws / ".vscode" / "launch.json"
    launch.write_text('{"version": "0.2.0", "configurations": []}\n')
    if not _immutable(launch, True):
        require.missing("chattr +i is not supported on this file system (the rollback itself is tested in "
                    "tests/app/test_attach.py with a failing rename)")
    try:
        res = cli.run("gen-launch", "--ranks", "2", "--workspace", str(ws))
        assert res.returncode == ExitCode.AUTH, res.stderr
        line = res.stderr.strip()
        assert line.startswith("dbgfwd: error: cannot write") and "nothing was written" in line
        assert "unexpected" not in line and len(line.splitlines()) == 1
        assert sorted(p.name for p in (ws / ".vscode").iterdir()) == ["launch.json"]
    finally:
        _immutable(launch, False)


def test_removing_the_state_folder_mid_session_is_repaired_at_once(tmp_path, port_block):
    ws = tmp_path / "ws"
    ws.mkdir()
    bg = _attach(ws, "--base-port", str(port_block(2)), log=tmp_path / "attach.log")
    try:
        cli.wait_for(lambda: cli.run("status", "--workspace", str(ws)).returncode == 0, 30, "status")
        # The heartbeat: with nothing changing the file is touched, not rewritten (1024 ranks' worth of JSON
        # every 5 s was most of an idle attach's CPU).
        path = state.session_path(ws)
        time.sleep(1)  # the start's writes are behind us: the two ranks wait for ranks that never come
        text, first = path.read_text(), path.stat().st_mtime
        cli.wait_for(lambda: path.stat().st_mtime > first, state.HEARTBEAT + 5, "a heartbeat")
        assert path.read_text() == text
        assert state.read_session(ws).stale_for is None
        shutil.rmtree(ws / ".dbgfwd")
        # back within a second or two, with no state change needed; still this attach's
        cli.wait_for(lambda: cli.run("status", "--workspace", str(ws)).returncode == 0, 5, "status again")
        again = cli.run("attach", "--provider", "local", "--ranks", "1", "--workspace", str(ws), "--duration", "1")
        assert again.returncode == ExitCode.BUSY, again.stderr
    finally:
        assert bg.stop() == ExitCode.INTERRUPTED, bg.output()


def test_a_session_that_stopped_being_refreshed_is_not_reported_healthy(tmp_path):
    """An attach stopped with SIGSTOP (a suspended laptop) keeps its pid and lock, but its state goes
    stale: status and wait must not exit 0."""
    lock = state.lock_workspace(tmp_path)  # this process plays the attach
    try:
        state.write_session(tmp_path, {"provider": "local", "ranks": [
            {"rank": 0, "local_port": 40000, "local_rank": 0, "state": "ready", "target_name": "localhost"}]})
        assert cli.run("status", "--workspace", str(tmp_path)).returncode == 0
        assert cli.run("wait", "--timeout", "5", "--workspace", str(tmp_path)).returncode == 0
        path = state.session_path(tmp_path)
        data = json.loads(path.read_text())
        data["updated"] -= state.STALE_AFTER + 10
        path.write_text(json.dumps(data))
        res = cli.run("status", "--workspace", str(tmp_path))
        assert res.returncode == 0, res.stderr  # touched since: the heartbeat of an unchanged state
        os.utime(path, (data["updated"], data["updated"]))
        res = cli.run("status", "--workspace", str(tmp_path))
        assert res.returncode == ExitCode.NO_SESSION and "has not updated its state" in res.stderr, res.stderr
        assert "127.0.0.1:40000" in res.stdout  # the last known table is still shown
        res = cli.run("wait", "--timeout", "1", "--workspace", str(tmp_path))
        assert res.returncode == ExitCode.TIMEOUT and "stopped" in res.stderr, res.stderr
    finally:
        lock.release()
