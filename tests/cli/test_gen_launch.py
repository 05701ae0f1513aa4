"""`dbgfwd gen-launch` as users run it, and its config driving a real DAP session through a real forward."""

from __future__ import annotations

import json
import sys

from dbgfwd.errors import ExitCode
from dbgfwd.vscode.jsonc import loads
from tests.support import cli
from tests.support.dap import DapClient
from tests.support.ranks import BREAK_LINE, RANK_PROGRAM, start_rank, wait_for_markers, write_program


def test_plan_from_the_command_line(tmp_path, port_block):
    lb = port_block(4, start=41000)
    res = cli.run("gen-launch", "--ranks", "4", "--ranks-per-node", "2", "--base-port", "5678",
                  "--local-base-port", str(lb), "--only", "1-3", "--compound", "1,2", "--compound-per-node",
                  "--remote-root", "/job", "--workspace", str(tmp_path))
    assert res.returncode == 0, res.stderr
    launch = loads((tmp_path / ".vscode" / "launch.json").read_text())
    assert [(c["name"], c["connect"]["port"]) for c in launch["configurations"]] == [
        ("dbgfwd: rank 1 (node0)", lb + 1), ("dbgfwd: rank 2 (node1)", lb + 2), ("dbgfwd: rank 3 (node1)", lb + 3)]
    assert [c["name"] for c in launch["compounds"]] == [
        "dbgfwd: all ranks", "dbgfwd: ranks 1-2", "dbgfwd: ranks 1 (node0)", "dbgfwd: ranks 2-3 (node1)"]
    tasks = loads((tmp_path / ".vscode" / "tasks.json").read_text())["tasks"]
    assert tasks[0]["args"][-3:] == ["wait", "--ranks", "1-3"]
    # `dbgfwd` when that is this installation on PATH, else this Python running the module.
    assert [tasks[0]["command"], *tasks[0]["args"][:-3]] in (["dbgfwd"], [sys.executable, "-m", "dbgfwd"])
    # The ports are remembered for attach; a rerun is a no-op.
    assert json.loads((tmp_path / ".dbgfwd" / "ports.json").read_text())["ports"] == {
        "1": lb + 1, "2": lb + 2, "3": lb + 3}
    before = (tmp_path / ".vscode" / "launch.json").read_bytes()
    again = cli.run("gen-launch", "--ranks", "4", "--ranks-per-node", "2", "--local-base-port", str(lb),
                    "--only", "1-3", "--compound", "1,2", "--compound-per-node", "--remote-root", "/job",
                    "--workspace", str(tmp_path))
    assert again.returncode == 0 and "up to date" in again.stderr
    assert (tmp_path / ".vscode" / "launch.json").read_bytes() == before


def test_plan_from_the_session_state(tmp_path):
    state = tmp_path / ".dbgfwd"
    state.mkdir()
    (state / "session.json").write_text(json.dumps({"version": 1, "pid": 1, "ranks": [
        {"rank": 0, "node": "pod-a", "target_name": "pod-a", "local_rank": 0, "remote_port": 5678,
         "local_port": 40100, "state": "ready", "remote_root": "/workspace"},
        {"rank": 1, "node": "pod-b", "local_rank": 0, "remote_port": 5678, "local_port": 40101,
         "state": "waiting", "future_field": [1, 2]},
    ]}))
    res = cli.run("gen-launch", "--json", "--workspace", str(tmp_path))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [c["connect"]["port"] for c in out["configurations"]] == [40100, 40101]
    assert out["configurations"][0]["pathMappings"][0]["remoteRoot"] == "/workspace"
    assert "pathMappings" not in out["configurations"][1]
    assert not (tmp_path / ".vscode").exists()  # --json only prints
    dry = cli.run("gen-launch", "--dry-run", "--only", "1", "--workspace", str(tmp_path))
    assert dry.returncode == 0 and '+            "name": "dbgfwd: rank 1 (pod-b)",' in dry.stdout
    assert "rank 0" not in dry.stdout and not (tmp_path / ".vscode").exists()


def test_usage_errors_and_bad_files(tmp_path):
    res = cli.run("gen-launch", "--workspace", str(tmp_path))
    assert res.returncode == ExitCode.USAGE and "no --ranks" in res.stderr
    res = cli.run("gen-launch", "--ranks", "2", "--compound", "0,5", "--workspace", str(tmp_path))
    assert res.returncode == ExitCode.USAGE and "--compound 0,5 names ranks not in the plan: 5" in res.stderr
    assert list(tmp_path.iterdir()) == []  # nothing half-written, not even ports.json
    vscode = tmp_path / ".vscode"
    vscode.mkdir()
    bad = b'{\n  "configurations": [\n    {"name": "mine",}\n    {"name": "broken"}\n  ]\n}\n'
    (vscode / "launch.json").write_bytes(bad)
    res = cli.run("gen-launch", "--ranks", "2", "--workspace", str(tmp_path))
    assert res.returncode == ExitCode.BAD_FILE
    assert f"{vscode / 'launch.json'}:4:5: expected ',' or ']'" in res.stderr and "nothing was written" in res.stderr
    assert (vscode / "launch.json").read_bytes() == bad and not (vscode / "tasks.json").exists()
    (tmp_path / ".dbgfwd").mkdir()
    (tmp_path / ".dbgfwd" / "session.json").write_text('{"ranks": [{"rank": 0}]}')
    res = cli.run("gen-launch", "--workspace", str(tmp_path))
    assert res.returncode == ExitCode.BAD_FILE and "ranks[0] has no valid 'local_port'" in res.stderr


def test_generated_config_hits_a_mapped_breakpoint_through_a_real_forward(tmp_path, port_block):
    """Local root != remote root: the client sets the breakpoint on its copy, debugpy runs another."""
    remote = tmp_path / "remote" / "job"
    remote.mkdir(parents=True)
    ws = tmp_path / "ws"
    ws.mkdir()
    program = write_program(remote, name="train.py")
    local_copy = write_program(ws, RANK_PROGRAM, name="train.py")
    runtime = tmp_path / "run"
    base, local_base = port_block(2), port_block(2, start=31000)
    ranks = [start_rank(program, r, r, runtime, base_port=base, world_size=2) for r in range(2)]
    bg = None
    try:
        wait_for_markers(runtime, {0, 1}, procs=ranks)
        bg = cli.Background("attach", "--provider", "local", "--runtime-dir", str(runtime), "--base-port", str(base),
                            "--local-base-port", str(local_base), "--workspace", str(ws), "--no-launch-json",
                            log=tmp_path / "attach.log")
        cli.wait_ready(ws, bg=bg)
        res = cli.run("gen-launch", "--workspace", str(ws), "--remote-root", str(remote), "--json")
        assert res.returncode == 0, res.stderr
        configs = json.loads(res.stdout)["configurations"]
        job, configs = configs[0], configs[1:]  # the running session's job session comes first
        assert (job["name"], job["connect"]["port"]) == ("dbgfwd: job", cli.session(ws)["job_port"])
        assert [c["connect"]["port"] for c in configs] == [local_base, local_base + 1]
        for rank, config in enumerate(configs):
            mappings = [{k: v.replace("${workspaceFolder}", str(ws)) for k, v in m.items()}
                        for m in config["pathMappings"]]
            client = DapClient(config["connect"]["host"], config["connect"]["port"], timeout=60)
            try:
                client.attach({str(local_copy): [BREAK_LINE]}, path_mappings=mappings,
                              just_my_code=config.get("justMyCode", False))
                thread = client.wait_stopped(60)["body"]["threadId"]
                frame = client.top_frame(thread)
                assert frame["line"] == BREAK_LINE and frame["source"]["path"] == str(local_copy)
                assert client.evaluate("__file__", frame["id"]) == repr(str(program))
                assert client.evaluate("rank", frame["id"]) == str(rank)
                client.continue_(thread)
            finally:
                client.disconnect()
    finally:
        if bg is not None:
            assert bg.stop() == 130, bg.output()
        for r in ranks:
            r.stop()


def test_wait_task_is_told_the_workspace_when_launch_json_lives_elsewhere(tmp_path, port_block):
    import json as _json

    base = str(port_block(2, start=41000))

    from tests.support.cli import run, strip_jsonc

    ws, elsewhere = tmp_path / "ws", tmp_path / "other" / ".vscode"
    ws.mkdir()
    elsewhere.parent.mkdir()  # only .vscode/ itself is ever created
    res = run("gen-launch", "--ranks", "2", "--local-base-port", base, "--workspace", str(ws),
              "--launch-json", str(elsewhere / "launch.json"))
    assert res.returncode == 0, res.stderr
    tasks = _json.loads(strip_jsonc((elsewhere / "tasks.json").read_text()))["tasks"]
    # relative to VS Code's folder (other/): the files stay right when the checkout moves
    assert tasks and all(t["options"]["env"]["DBGFWD_WORKSPACE"] == "${workspaceFolder}/../ws" for t in tasks)
    assert (ws / ".dbgfwd" / ".gitignore").read_text() == "*\n"
    res = run("gen-launch", "--ranks", "2", "--local-base-port", base, "--workspace", str(ws))
    tasks = _json.loads(strip_jsonc((ws / ".vscode" / "tasks.json").read_text()))["tasks"]
    assert all("DBGFWD_WORKSPACE" not in t["options"]["env"] for t in tasks)


def test_the_readme_shows_the_files_as_they_really_come_out(tmp_path, port_block):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    base = port_block(2, start=43000)  # the README's 5678 may be busy here: ports are compared as offsets
    res = cli.run("gen-launch", "--ranks", "2", "--local-base-port", str(base), "--remote-root", "/workspace",
                  "--workspace", str(tmp_path))
    assert res.returncode == 0, res.stderr
    for name in ("launch.json", "tasks.json"):
        shown = re.search(r"<!-- generated: " + re.escape(name) + r" -->\n```json\n(.*?)```", readme, re.S)
        assert shown, f"README has no generated {name} block"
        got = re.sub(r'"port": (\d+)', lambda m: f'"port": {int(m.group(1)) - base + 5678}',
                     (tmp_path / ".vscode" / name).read_text())
        assert shown.group(1) == got, f"README's {name} is out of date"
