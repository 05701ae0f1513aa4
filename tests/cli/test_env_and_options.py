"""The documented environment variables and launch.json options, through the real CLI."""

from __future__ import annotations

import json
import subprocess

from dbgfwd.vscode.jsonc import loads
from tests.support import cli
from tests.support import leaky_provider as leaky
from tests.support.echo_server import EchoServer


def test_dbgfwd_workspace_provider_and_base_port_are_read_from_the_environment(tmp_path, port_block):
    runtime = tmp_path / "run"
    base = port_block(2)
    servers = [EchoServer.start(port=base + r, rank=r, marker_dir=runtime) for r in range(2)]
    try:
        env = {"DBGFWD_PROVIDER": "local", "DBGFWD_BASE_PORT": str(base), "DBGFWD_RUNTIME_DIR": str(runtime)}
        res = cli.run("ls", "--json", env=env)
        assert res.returncode == 0, res.stderr
        found = json.loads(res.stdout)
        assert [(r["rank"], r["remote_port"]) for r in found["ranks"]] == [(0, base), (1, base + 1)], found
        # another base port is another job: nothing of it runs here (exit 3), so the variable was used
        res = cli.run("ls", env=dict(env, DBGFWD_BASE_PORT=str(base + 500)))
        assert res.returncode == 3, res.stderr
        # the provider comes from the variable: an ssh-only option is refused as another provider's
        res = cli.run("ls", "--hostfile", str(tmp_path / "h"), env=dict(env, DBGFWD_PROVIDER="local"))
        assert res.returncode == 2 and "ssh provider" in res.stderr, res.stderr
    finally:
        for s in servers:
            s.stop()
    ws = tmp_path / "ws"
    ws.mkdir()
    res = cli.run("gen-launch", "--ranks", "1", cwd=tmp_path, env={"DBGFWD_WORKSPACE": str(ws)})
    assert res.returncode == 0, res.stderr
    assert (ws / ".vscode" / "launch.json").exists() and not (tmp_path / ".vscode").exists()


def test_dbgfwd_debug_shows_the_traceback_like_debug():
    cmd = leaky.cli_command("ls", "--provider", "leaky", "--leaky-crash")
    quiet = subprocess.run(cmd, capture_output=True, text=True, env=leaky.cli_env(), timeout=60)
    loud = subprocess.run(cmd, capture_output=True, text=True, env=dict(leaky.cli_env(), DBGFWD_DEBUG="1"),
                          timeout=60)
    assert quiet.returncode == loud.returncode == 1
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr, loud.stderr


def test_just_my_code_and_local_root_reach_the_attach_configs(tmp_path):
    def configs(*args):
        res = cli.run("gen-launch", "--ranks", "2", "--remote-root", "/job", "--workspace", str(tmp_path), *args)
        assert res.returncode == 0, res.stderr
        return [c for c in loads((tmp_path / ".vscode" / "launch.json").read_text())["configurations"]
                if c["name"].startswith("dbgfwd: rank")]

    default = configs()
    assert all("justMyCode" not in c for c in default)  # the user's VS Code setting applies
    assert {m["localRoot"] for c in default for m in c["pathMappings"]} == {"${workspaceFolder}"}
    mine = configs("--no-just-my-code", "--local-root", "${workspaceFolder}/src")
    assert [c["justMyCode"] for c in mine] == [False, False]
    assert [c["pathMappings"] for c in mine] == [[{"localRoot": "${workspaceFolder}/src", "remoteRoot": "/job"}]] * 2
    assert [c["justMyCode"] for c in configs("--just-my-code")] == [True, True]


def test_no_color_and_NO_COLOR_write_no_escape_sequences_even_when_color_is_forced(tmp_path):
    forced = {"FORCE_COLOR": "1", "NO_COLOR": ""}
    table = cli.run("ranks", "2", "-w", str(tmp_path), env=forced)
    error = cli.run("ranks", "0", "-w", str(tmp_path), env=forced)
    assert "\x1b[" in table.stdout and "\x1b[" in error.stderr  # color really is forced here...
    for extra, env in ((["--no-color"], forced), ([], dict(forced, NO_COLOR="1"))):
        for args in (["ranks", "2"], ["ranks", "0"]):  # a table on stdout, an error on stderr
            res = cli.run(*args, "-w", str(tmp_path), *extra, env=env)
            assert "\x1b" not in res.stdout + res.stderr, (extra, args, res.stdout + res.stderr)
            assert res.stdout + res.stderr
