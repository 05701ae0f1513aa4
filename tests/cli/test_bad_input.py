"""Bad input: one line on stderr naming what was wrong, the documented exit code, nothing started."""

from __future__ import annotations

import pytest

from dbgfwd.errors import ExitCode
from tests.support import cli


def _one_line(res) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.mark.parametrize("args, words", [
    (["--provider", "ssh", "-l", "alice", "node01"], ["-l/--selector", "kubernetes", "ssh provider"]),
    (["--provider", "local", "--kubeconfig", "/nonexistent"], ["--kubeconfig", "kubernetes", "local provider"]),
    (["--provider", "kubernetes", "--hostfile", "hosts", "pod"], ["--hostfile", "ssh provider"]),
])
def test_an_option_of_another_provider_is_refused(tmp_path, args, words):
    res = cli.run("attach", *args, "--workspace", str(tmp_path), "--duration", "1")
    assert res.returncode == ExitCode.USAGE, res.stderr
    line = _one_line(res)
    for word in words:
        assert word in line, line
    assert not (tmp_path / ".vscode").exists()


def test_ranks_per_pod_must_be_positive(tmp_path):
    res = cli.run("attach", "--provider", "kubernetes", "--ranks-per-pod", "0", "pod", "--workspace", str(tmp_path))
    assert res.returncode == ExitCode.USAGE and "--ranks-per-pod" in res.stderr


def test_batch_job_id_is_checked_before_the_region_and_warnings(tmp_path):
    env = {"AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "AWS_REGION": "", "AWS_DEFAULT_REGION": ""}
    res = cli.run("attach", "--provider", "batch", "not-a-job", "--workspace", str(tmp_path), env=env)
    assert res.returncode == ExitCode.USAGE
    assert "not an AWS Batch job id" in _one_line(res)  # not "no AWS region", and no "1 rank per node" warning


def test_a_region_that_is_no_region_name_is_a_usage_error(tmp_path):
    res = cli.run("ls", "--provider", "batch", "--region", "us-esat1", "--queue", "q")
    assert res.returncode == ExitCode.USAGE and "not an AWS region name" in _one_line(res)


def test_an_unknown_region_that_cannot_be_reached_is_named():
    import botocore.exceptions as be

    from dbgfwd.providers.batch.aws import AwsContext, translate

    exc = be.EndpointConnectionError(endpoint_url="https://batch.us-east-99.amazonaws.com/")
    err = translate(exc, AwsContext(None, "us-east-99", known_region=False), "batch:DescribeJobs")
    assert err.code == ExitCode.USAGE and "unknown AWS region 'us-east-99'" in err.message
    err = translate(exc, AwsContext(None, "us-east-1"), "batch:DescribeJobs")
    assert err.code == ExitCode.UNREACHABLE


def test_a_missing_file_is_always_exit_8(tmp_path):
    for args in (["attach", "--provider", "kubernetes", "--kubeconfig", str(tmp_path / "kc"), "pod"],
                 ["attach", "--provider", "ssh", "--ssh-config", str(tmp_path / "cfg"), "h"],
                 ["attach", "--provider", "ssh", "--identity", str(tmp_path / "key"), "h"],
                 ["attach", "--workspace", str(tmp_path / "ws")]):
        res = cli.run(*args, "--duration", "1", cwd=tmp_path)
        assert res.returncode == ExitCode.BAD_FILE, (args, res.stderr)
        _one_line(res)
