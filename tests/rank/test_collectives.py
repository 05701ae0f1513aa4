"""The collective-timeout guard, in a real process with real torch (gloo, a one-rank world)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest

from dbgfwd.rank import collectives
from tests.conftest import free_port_block
from tests.support.torchjob import torch_or_skip

# Runs in a child process: prints the gloo timeouts torch really uses for each group, as JSON.
REPORT = '''
import json, os, sys
from datetime import timedelta
import torch, torch.distributed as dist
os.environ.update(MASTER_ADDR="127.0.0.1", RANK="0", WORLD_SIZE="1")
def t(group):
    return group._get_backend(torch.device("cpu")).options._timeout.total_seconds()
'''


def _run_launcher(tmp_path, body: str, *rank_args: str) -> dict:
    prog = tmp_path / "prog.py"
    prog.write_text(REPORT + body)
    env = dict(os.environ, MASTER_PORT=str(free_port_block(1, start=42000)))
    res = subprocess.run([sys.executable, "-m", "dbgfwd.rank", "--base-port", str(free_port_block(1)),
                          *rank_args, "--", str(prog)], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return {"out": json.loads(res.stdout.strip().splitlines()[-1]), "err": res.stderr}


def test_groups_made_after_the_launcher_get_the_debugging_timeout_and_never_less(tmp_path):
    torch_or_skip()
    body = '''
dist.init_process_group("gloo", timeout=timedelta(seconds=8))
small = dist.new_group([0])
large = dist.new_group([0], timeout=timedelta(hours=5))
print(json.dumps({"default": t(dist.group.WORLD), "small": t(small), "large": t(large),
                  "heartbeat": os.environ.get("TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC")}))
'''
    got = _run_launcher(tmp_path, body, "--collective-timeout", "90m")
    assert got["out"] == {"default": 5400.0, "small": 5400.0, "large": 18000.0, "heartbeat": "5400"}
    assert got["err"].count("collective timeouts raised to 90m (from 0:00:08)") == 1
    assert "--collective-timeout keep" in got["err"]  # says how to turn it off


def test_keep_leaves_the_programs_timeouts(tmp_path):
    torch_or_skip()
    body = '''
dist.init_process_group("gloo", timeout=timedelta(seconds=8))
print(json.dumps({"default": t(dist.group.WORLD), "heartbeat": os.environ.get("TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC")}))
'''
    got = _run_launcher(tmp_path, body, "--collective-timeout", "keep")
    assert got["out"] == {"default": 8.0, "heartbeat": None}
    assert "collective" not in got["err"]


def test_groups_that_exist_before_the_guard_are_raised(tmp_path):
    """torch imported and the group made before the guard is installed (the snippet's or inject's case)."""
    torch_or_skip()
    body = '''
dist.init_process_group("gloo", timeout=timedelta(seconds=8))
before = t(dist.group.WORLD)
from dbgfwd.rank.collectives import Guard
guard = Guard(timedelta(hours=2), say=lambda m: None, log=lambda m: None)
guard.install()
later = dist.new_group([0], timeout=timedelta(seconds=3))
print(json.dumps({"before": before, "after": t(dist.group.WORLD), "later": t(later), "raised": guard.raised}))
'''
    got = _run_launcher(tmp_path, body, "--collective-timeout", "keep")
    assert got["out"]["before"] == 8.0 and got["out"]["after"] == 7200.0 and got["out"]["later"] == 7200.0
    assert got["out"]["raised"][0] == "an existing process group: 0:00:08 -> 2:00:00"


def test_a_program_without_torch_never_imports_it_and_changes_nothing(tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text("import json, os, sys\n"
                    "print(json.dumps({'torch': sorted(m for m in sys.modules if m.split('.')[0] == 'torch'),"
                    " 'env': {k: v for k, v in os.environ.items() if k.startswith('TORCH')}}))\n")
    res = subprocess.run([sys.executable, "-m", "dbgfwd.rank", "--base-port", str(free_port_block(1)), "--",
                          str(prog)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"torch": [], "env": {}}
    assert "collective" not in res.stderr


@pytest.mark.parametrize("text,seconds", [("2h", 7200), ("90m", 5400), ("3600", 3600), ("45s", 45), ("1d", 86400),
                                          (" 2H ", 7200)])
def test_parse_timeout(text, seconds):
    assert collectives.parse_timeout(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["keep", "off", "0"])
def test_parse_timeout_keep(text):
    assert collectives.parse_timeout(text) is None


@pytest.mark.parametrize("text", ["", "abc", "-5", "2x", "nan", "400d"])
def test_parse_timeout_rejects(text):
    with pytest.raises(ValueError):
        collectives.parse_timeout(text)


def test_bad_collective_timeout_is_one_line_and_exit_2(tmp_path):
    prog = tmp_path / "p.py"
    prog.write_text("print('ran')\n")
    res = subprocess.run([sys.executable, "-m", "dbgfwd.rank", "--collective-timeout", "soon", "--", str(prog)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "ran" not in res.stdout
    assert res.stderr.strip().splitlines() == [
        "dbgfwd-rank: error: --collective-timeout: not a duration: 'soon' (use e.g. 2h, 90m, 3600 or keep)"]


def test_format_timeout():
    assert [collectives.format_timeout(timedelta(seconds=s)) for s in (7200, 5400, 86400, 45, 61)] == \
        ["2h", "90m", "1d", "45s", "61s"]
