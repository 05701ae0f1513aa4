"""The real `dbgfwd` entry point: help, plans, and one clear line + exit code for bad input."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from dbgfwd.errors import ExitCode
from tests.support import cli


def _one_error_line(res) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("dbgfwd: error: "), lines[0]
    return lines[0]


def test_help_lists_commands_exit_codes_and_env_without_loading_sdks():
    code = ("import sys\nfrom dbgfwd.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\nheavy = [m for m in ('paramiko','kubernetes','boto3','botocore') "
            "if m in sys.modules]\nprint('HEAVY', heavy)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout
    for word in ("attach", "ranks", "status", "wait", "demo", "Exit codes", "DBGFWD_WORKSPACE"):
        assert word in res.stdout
    for cmd in ("attach", "ranks", "status", "wait", "demo", "ls"):
        sub = cli.run(cmd, "--help")
        assert sub.returncode == 0 and "Usage" in sub.stdout, (cmd, sub.stderr)


def test_the_command_list_in_help_is_each_commands_own_help_and_builds_no_command():
    """`dbgfwd --help` lists the commands from dbgfwd.cli.COMMANDS, without importing or building one; what it
    lists must be what each command's own help says, at every width click can wrap to."""
    code = ("import sys\nfrom dbgfwd.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in sys.modules if m.startswith('dbgfwd.cli.') and m not in "
            "('dbgfwd.cli.fast', 'dbgfwd.cli.help')))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "LOADED []" in res.stdout, res.stdout
    listed = res.stdout[res.stdout.index("Commands:"):res.stdout.index("LOADED")].splitlines()[1:]
    from typer._click.utils import make_default_short_help

    from dbgfwd.cli import COMMANDS, load_command

    assert [line.split()[0] for line in listed if line.strip()] == list(COMMANDS)
    for name, (_, summary) in COMMANDS.items():
        command = load_command(name)
        assert command.name == name and not command.hidden
        for limit in range(10, 400, 7):
            assert make_default_short_help(summary, limit) == command.get_short_help_str(limit), (name, limit)


def test_a_command_is_built_only_when_it_runs():
    code = ("import sys\nfrom dbgfwd.cli import main\ntry:\n    main(['status', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint('LOADED', sorted(m for m in sys.modules if m.startswith('dbgfwd.cli.')))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    loaded = res.stdout[res.stdout.index("LOADED"):]
    assert "dbgfwd.cli.status" in loaded and "dbgfwd.cli.attach'" not in loaded, loaded
    res = cli.run("atach")
    assert res.returncode == ExitCode.USAGE and "Did you mean 'attach'" in res.stderr, res.stderr


def test_ranks_json_plan(tmp_path, port_block):
    base = port_block(4)
    res = cli.run("ranks", "4", "--ranks-per-node", "2", "--base-port", str(base), "--only", "1-3", "--json",
                  "--workspace", str(tmp_path))
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert [(r["rank"], r["node"], r["local_rank"], r["remote_port"], r["local_port"]) for r in data["ranks"]] == [
        (1, "node0", 1, base + 1, base + 1), (2, "node1", 0, base, base + 2), (3, "node1", 1, base + 1, base + 3)]


def test_ranks_are_stable_across_runs_when_saved(tmp_path, port_block):
    base = port_block(3)
    first = json.loads(cli.run("ranks", "3", "--base-port", str(base), "--save", "--json",
                               "--workspace", str(tmp_path)).stdout)
    # Now rank 1's port is taken by someone else: the remembered map still decides the others.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", base + 1))
        s.listen(1)
        second = json.loads(cli.run("ranks", "3", "--base-port", str(base), "--json",
                                    "--workspace", str(tmp_path)).stdout)
    ports1 = [r["local_port"] for r in first["ranks"]]
    ports2 = [r["local_port"] for r in second["ranks"]]
    assert ports2[0] == ports1[0] and ports2[2] == ports1[2] and ports2[1] != base + 1


def test_busy_explicit_port_is_one_line_exit_4(tmp_path, port_block):
    base = port_block(2)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", base + 1))
        s.listen(1)
        res = cli.run("ranks", "2", "--local-base-port", str(base), "--workspace", str(tmp_path))
    assert res.returncode == ExitCode.PORT_UNAVAILABLE
    assert f"local port {base + 1} for rank 1 is busy" in _one_error_line(res)


def test_port_range_that_does_not_fit(tmp_path):
    res = cli.run("ranks", "100", "--local-base-port", "65500", "--workspace", str(tmp_path))
    assert res.returncode == ExitCode.PORT_UNAVAILABLE
    assert "do not fit" in _one_error_line(res)


def test_unknown_provider(tmp_path):
    res = cli.run("attach", "--provider", "nope", "--workspace", str(tmp_path))
    assert res.returncode == ExitCode.USAGE
    assert "unknown provider 'nope'" in _one_error_line(res)


def test_bad_option_is_one_line_usage_error(tmp_path):
    res = cli.run("ranks", "zero")
    assert res.returncode == ExitCode.USAGE
    _one_error_line(res)
    res = cli.run("ranks", "2", "--only", "3-1", "--workspace", str(tmp_path))
    assert res.returncode == ExitCode.USAGE
    assert "bad rank list" in _one_error_line(res)


def test_no_ranks_found_says_where_it_looked(tmp_path, port_block):
    base = port_block(64)
    res = cli.run("attach", "--provider", "local", "--runtime-dir", str(tmp_path / "empty"), "--base-port", str(base),
                  "--workspace", str(tmp_path), "--no-launch-json")
    assert res.returncode == ExitCode.NOT_FOUND
    line = _one_error_line(res)
    assert str(tmp_path / "empty") in line and f"127.0.0.1:{base}" in line
    assert not (tmp_path / ".dbgfwd" / "session.json").exists()


def test_status_and_wait_without_a_session(tmp_path):
    res = cli.run("status", "--workspace", str(tmp_path))
    assert res.returncode == ExitCode.NO_SESSION
    _one_error_line(res)
    res = cli.run("wait", "--timeout", "0.5", "--workspace", str(tmp_path))
    assert res.returncode == ExitCode.NO_SESSION


def test_wait_times_out_on_ranks_that_never_start(tmp_path, port_block):
    base = port_block(2)
    bg = cli.Background("attach", "--provider", "local", "--runtime-dir", str(tmp_path / "run"), "--ranks", "2",
                        "--base-port", str(base), "--workspace", str(tmp_path), "--no-launch-json",
                        log=tmp_path / "attach.log")
    try:
        cli.wait_for(lambda: (tmp_path / ".dbgfwd" / "session.json").exists(), what="session")
        res = cli.run("wait", "--timeout", "1", "--workspace", str(tmp_path))
        assert res.returncode == ExitCode.TIMEOUT
        assert "0:waiting" in _one_error_line(res)
        st = json.loads(cli.run("status", "--json", "--workspace", str(tmp_path)).stdout)
        assert [r["state"] for r in st["ranks"]] == ["waiting", "waiting"]
        assert (tmp_path / ".dbgfwd" / "session.json").stat().st_mode & 0o777 == 0o600
    finally:
        assert bg.stop() == 130, bg.output()


def test_demo_runs_and_cleans_up(tmp_path):
    res = cli.run("demo", "--ranks", "2", "--duration", "3", "--json", "--workspace", str(tmp_path / "demo"),
                  timeout=120)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert len(data["ranks"]) == 2 and all(r["state"] == "ready" for r in data["ranks"])
    assert cli.launch_ports(tmp_path / "demo" / ".vscode" / "launch.json") == {
        r["rank"]: r["local_port"] for r in data["ranks"]}
    assert not list((tmp_path / "demo" / ".dbgfwd").glob("run/rank-*.json"))


def test_demo_removes_its_temporary_workspace_unless_kept(tmp_path):
    for extra, left in (([], 0), (["--keep"], 1)):
        res = cli.run("demo", "--ranks", "1", "--duration", "1", *extra, env={"TMPDIR": str(tmp_path)}, timeout=120)
        assert res.returncode == 0, res.stderr
        kept = list(tmp_path.glob("dbgfwd-demo-*"))
        assert len(kept) == left, (extra, kept, res.stderr)
    assert (kept[0] / ".vscode" / "launch.json").exists()
