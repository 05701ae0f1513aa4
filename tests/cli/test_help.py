"""Help for a first-time user: grouped options, values named in words, plain validation messages,
and shell completion of commands, options and cheap targets."""

from __future__ import annotations

import os
import re

import pytest

from dbgfwd.errors import ExitCode
from tests.support import cli

COMMANDS = ("attach", "ls", "status", "wait", "ranks", "gen-launch", "stacks", "snippet", "demo")


def test_attach_help_groups_options_by_what_they_are_for():
    out = cli.run("attach", "--help", env={"COLUMNS": "100"}).stdout
    headings = [line[:-1] for line in out.splitlines() if re.match(r"^[A-Z][^ ].*:$", line)]
    for heading in ("Options", "Ports and ranks", "VS Code", "Who may connect", "SSH hosts",
                    "Kubernetes / OpenShift", "AWS Batch (SSM)", "Local"):
        assert heading in headings, headings
    assert out.index("--base-port") > out.index("Ports and ranks:") and out.index("--hostfile") > out.index("SSH hosts:")


@pytest.mark.parametrize("command", COMMANDS)
def test_values_are_named_in_words_and_n_means_namespace(command):
    out = cli.run(command, "--help", env={"COLUMNS": "120"}).stdout
    options = [line for line in out.splitlines() if line.strip().startswith("-")]
    for line in options:
        assert not re.search(r"<(int|float|str|path|file|dir)[^>]*>", line), line
    for line in options:
        if re.match(r"\s*-n,", line):
            assert "--namespace" in line, line


@pytest.mark.parametrize("args, expected", [
    (["ranks", "2", "--base-port", "70000"], "--base-port must be at most 65535 (got '70000')"),
    (["ranks", "0"], "COUNT must be at least 1"),
    (["wait", "--timeout", "soon"], "--timeout must be a number (got 'soon')"),
])
def test_validation_messages_are_plain_words(args, expected):
    res = cli.run(*args)
    assert res.returncode == ExitCode.USAGE
    assert expected in res.stderr and "Input should" not in res.stderr, res.stderr


def _complete(words: str, home) -> list[str]:
    env = {"_DBGFWD_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1),
           "HOME": str(home), "KUBECONFIG": ""}
    res = cli.run(env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_shell_completion_of_commands_options_and_local_targets(tmp_path):
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text(
        "apiVersion: v1\ncontexts:\n- name: dev\n  context: {cluster: c, namespace: nccl-test}\n"
        "- name: prod\n  context: {cluster: c}\n")
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "config").write_text("[default]\nregion=us-east-1\n[profile ml]\nregion=us-west-2\n")
    assert _complete("dbgfwd at", tmp_path) == ["attach", "attach-rank"]
    assert "--base-port" in _complete("dbgfwd attach --base", tmp_path)
    assert _complete("dbgfwd attach --provider ", tmp_path) == ["batch", "kubernetes", "local", "ssh"]
    assert _complete("dbgfwd attach --context ", tmp_path) == ["dev", "prod"]
    assert _complete("dbgfwd ls -n ", tmp_path) == ["nccl-test"]
    env = {"AWS_CONFIG_FILE": str(tmp_path / ".aws" / "config")}
    os.environ.update(env)
    try:
        assert _complete("dbgfwd attach --profile ", tmp_path) == ["default", "ml"]
    finally:
        os.environ.pop("AWS_CONFIG_FILE")
    (tmp_path / ".kube" / "config").write_text("{{{ not yaml")
    assert _complete("dbgfwd attach --context ", tmp_path) == []  # a broken file never breaks the shell


def test_completion_scripts_are_offered():
    res = cli.run("--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert res.returncode == 0 and "_DBGFWD_COMPLETE" in res.stdout, res.stdout + res.stderr


def test_exit_codes_are_the_documented_numbers():
    """The numbers scripts rely on, written out: renumbering the enum must fail here, and README's table must
    list exactly these."""
    import re
    from pathlib import Path

    documented = {"OK": 0, "ERROR": 1, "USAGE": 2, "NOT_FOUND": 3, "PORT_UNAVAILABLE": 4, "AUTH": 5, "UNREACHABLE": 6,
                  "TIMEOUT": 7, "BAD_FILE": 8, "UNAVAILABLE": 9, "NO_SESSION": 10, "BUSY": 11, "NOT_INJECTED": 12,
                  "HANGUP": 129, "INTERRUPTED": 130, "TERMINATED": 143}
    assert {c.name: int(c) for c in ExitCode} == documented
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    assert sorted(int(n) for n in re.findall(r"^\| (\d+) \|", table, re.M)) == sorted(documented.values())
