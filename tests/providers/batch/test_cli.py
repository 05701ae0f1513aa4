"""The batch provider through the real `dbgfwd` entry point: one-line errors, exit codes, `ls`."""

from dbgfwd.errors import ExitCode
from tests.support import cli


def test_ls_shows_running_and_starting_nodes(world):
    _, ci = world.instance()
    job = world.mnp_job([(ci, "10.0.0.5")], pending=1)
    res = cli.run("ls", job, "--ranks-per-node", "2", "--json", env=world.env())  # provider inferred from the id
    assert res.returncode == 0, res.stderr
    assert "train-mnp#0" in res.stdout and "train-mnp#1" in res.stdout and "STARTING" in res.stdout


def test_errors_are_one_line_with_exit_codes(world):
    missing = "00000000-1111-2222-3333-444444444444"
    res = cli.run("ls", "--provider", "batch", missing, env=world.env())
    assert res.returncode == ExitCode.NOT_FOUND
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and missing in lines[0] and "--region" in lines[0]
    res = cli.run("ls", "--provider", "batch", "worker-1", env=world.env())
    assert res.returncode == ExitCode.USAGE and "not an AWS Batch job id" in res.stderr
    world.fake.deny.add("DescribeJobs")
    res = cli.run("ls", "--provider", "batch", missing, env=world.env())
    assert res.returncode == ExitCode.AUTH and "batch:DescribeJobs" in res.stderr
