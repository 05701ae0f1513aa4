"""Every documented exit code, reached through the real CLI and compared with the README's literal number.

(The numbers themselves are pinned against the README table in test_help.py; here each code is shown
to be what a user actually gets in the situation the README names.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess

from dbgfwd.workspace import state
from tests.support import cli
from tests.support import leaky_provider as leaky


def _one_line(res) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) <= 2, res.stderr  # the problem, and at most one hint
    assert "Traceback" not in res.stderr, res.stderr
    return res.stderr


def test_1_a_bug_is_one_line_and_the_traceback_is_behind_debug():
    res = subprocess.run(leaky.cli_command("ls", "--provider", "leaky", "--leaky-crash"), capture_output=True,
                         text=True, env=leaky.cli_env(), timeout=60)
    assert res.returncode == 1, res.stderr
    err = _one_line(res)
    assert "unexpected KeyError" in err and "--debug" in err and "report it" in err
    res = subprocess.run(leaky.cli_command("--debug", "ls", "--provider", "leaky", "--leaky-crash"),
                         capture_output=True, text=True, env=leaky.cli_env(), timeout=60)
    assert res.returncode == 1 and "Traceback" in res.stderr and "KeyError" in res.stderr
    assert leaky.SIGNATURE not in res.stderr  # even the traceback is redacted


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_6_an_api_server_that_refuses_connections(tmp_path):
    kc = tmp_path / "kubeconfig"
    kc.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{_closed_port()}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "ml"}}]}))
    res = cli.run("ls", "--provider", "kubernetes", "--kubeconfig", str(kc), "-l", "app=train", timeout=90)
    assert res.returncode == 6, res.stderr
    assert "127.0.0.1" in _one_line(res)


def test_6_an_ssh_host_that_refuses_connections(tmp_path):
    res = cli.run("ls", "--provider", "ssh", f"127.0.0.1:{_closed_port()}", timeout=90,
                  env={"HOME": str(tmp_path)})
    assert res.returncode == 6, res.stderr
    _one_line(res)


def test_9_the_session_manager_plugin_is_missing(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DBGFWD_SSM_PLUGIN": "", "AWS_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "AKIATESTTESTTESTTEST", "AWS_SECRET_ACCESS_KEY": "testing"}
    res = cli.run("ls", "--provider", "batch", "--ssm-backend", "plugin", "--queue", "q", env=env)
    assert res.returncode == 9, res.stderr
    err = _one_line(res)
    assert "session-manager-plugin is not installed" in err and "--ssm-backend native" in err


def test_8_a_hostfile_missing_or_unparsable(tmp_path):
    res = cli.run("ls", "--provider", "ssh", "--hostfile", str(tmp_path / "hosts"))
    assert res.returncode == 8 and "hosts" in _one_line(res), res.stderr
    bad = tmp_path / "hostfile"
    bad.write_text("node1 slots=two\n")
    res = cli.run("ls", "--provider", "ssh", "--hostfile", str(bad))
    assert res.returncode == 8 and "hostfile" in _one_line(res), res.stderr


def test_10_a_session_file_whose_attach_has_died(tmp_path):
    state.write_session(tmp_path, {"provider": "local", "ranks": []})
    path = state.session_path(tmp_path)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that was ours and has ended
    data = json.loads(path.read_text())
    data.update(pid=gone.pid)
    path.write_text(json.dumps(data))
    for args in (("status",), ("wait", "--timeout", "1"), ("attach-rank", "0")):
        res = cli.run(*args, "--workspace", str(tmp_path))
        assert res.returncode == 10, (args, res.stdout, res.stderr)
        _one_line(res)


def test_0_and_3_ls_found_something_or_nothing(tmp_path):
    res = subprocess.run(leaky.cli_command("ls", "--provider", "leaky", "--leaky-port", "1"),
                         capture_output=True, text=True, env=leaky.cli_env(), timeout=60)
    assert res.returncode == 0 and "leaky-0" in res.stdout
    res = cli.run("ls", "--provider", "local", "--runtime-dir", str(tmp_path / "none"))
    assert res.returncode == 3, res.stderr
    _one_line(res)
    assert os.listdir(tmp_path) in ([], ["none"])  # looking wrote nothing but maybe its own private folder
