"""What a command's start loads: no provider, no SDK, no pydantic and no rich for `--help`.

(Start-up time itself is a benchmark figure, bench/scale.py, never a timed test.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("pydantic", "rich", "dbgfwd.providers.local.provider", "dbgfwd.providers.ssh.provider",
         "dbgfwd.providers.kubernetes.provider", "dbgfwd.providers.batch.provider", "dbgfwd.vscode",
         "paramiko", "kubernetes", "boto3", "botocore", "click")


def _loaded_after(*args: str) -> set[str]:
    code = ("import sys, json\nfrom dbgfwd.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted(sys.modules)), file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    return set(json.loads(res.stderr.strip().splitlines()[-1]))


def test_help_loads_no_provider_sdk_pydantic_or_rich():
    for args in (["--help"], ["attach", "--help"], ["ls", "--help"]):
        loaded = _loaded_after(*args)
        assert not {m for m in loaded for h in HEAVY if m == h or m.startswith(h + ".")}, (args, loaded & set(HEAVY))


def test_declared_defaults_skip_typers_coercion_but_typed_values_do_not():
    """`ranks 4` with defaults: no pydantic; a value typed by the user goes through typer's checks."""
    assert "pydantic" not in _loaded_after("status")
    res = subprocess.run([sys.executable, "-m", "dbgfwd", "ranks", "2", "--base-port", "0"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and "--base-port" in res.stderr, res.stderr


def test_typed_numbers_and_flags_within_range_skip_pydantic_and_the_rest_still_gets_typers_checks(tmp_path):
    """What a script types (`ranks 4 --base-port 7000 --json -vv`, `wait --timeout 2.5`) is converted without
    pydantic; a number out of range, or not plainly written, still gets typer's message and exit code 2."""
    loaded = _loaded_after("-vv", "ranks", "4", "--base-port", "7000", "--ranks-per-node", "2", "--json",
                           "-w", str(tmp_path))
    assert "pydantic" not in loaded
    assert "pydantic" not in _loaded_after("wait", "--timeout", "2.5", "-w", str(tmp_path))
    res = subprocess.run([sys.executable, "-m", "dbgfwd", "ranks", "4", "--base-port", "7000", "--ranks-per-node",
                          "2", "--json", "-w", str(tmp_path)], capture_output=True, text=True, timeout=60)
    plan = json.loads(res.stdout)
    assert [(r["node"], r["remote_port"]) for r in plan["ranks"]] == [
        ("node0", 7000), ("node0", 7001), ("node1", 7000), ("node1", 7001)]
    for bad in ("70000", "7e3", "x"):
        res = subprocess.run([sys.executable, "-m", "dbgfwd", "ranks", "4", "--base-port", bad], capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 2 and "--base-port" in res.stderr, (bad, res.stderr)
    assert "pydantic" in _loaded_after("ranks", "4", "--base-port", "+7000")  # not plain: typer decides


def test_a_typed_path_skips_pydantic_and_still_gets_typers_path_checks(tmp_path):
    """`status -w DIR` (what a script runs every few seconds): the path is converted without pydantic, and
    typer's own rules for it still hold (a workspace must not be a file, --launch-json must not be a folder)."""
    assert "pydantic" not in _loaded_after("status", "-w", str(tmp_path))
    # what status prints a session with: the rank table and its rank ranges, without the planner
    res = subprocess.run([sys.executable, "-c", "import sys, dbgfwd.ui.tables, dbgfwd.plan.ranksets\n"
                          "print(' '.join(sys.modules))"], capture_output=True, text=True, timeout=60)
    assert not set(res.stdout.split()) & {"dbgfwd.plan.layout", "dbgfwd.providers.base", "dbgfwd.rank.markers"}
    a_file = tmp_path / "f"
    a_file.write_text("")
    res = subprocess.run([sys.executable, "-m", "dbgfwd", "status", "-w", str(a_file)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and "is a file" in res.stderr, res.stderr
    assert "DBGFWD_WORKSPACE" not in res.stderr  # typed, not read from the environment
    res = subprocess.run([sys.executable, "-m", "dbgfwd", "status"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "DBGFWD_WORKSPACE": str(a_file)})
    assert res.returncode == 2 and "is a file" in res.stderr and "(from $DBGFWD_WORKSPACE)" in res.stderr
    res = subprocess.run([sys.executable, "-m", "dbgfwd", "gen-launch", "--ranks", "2", "-w", str(tmp_path),
                          "--launch-json", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "is a directory" in res.stderr, res.stderr
    assert not (tmp_path / ".vscode").exists()


def test_rank_launcher_help_loads_nothing_that_runs_in_the_rank():
    code = ("import sys, json\nfrom dbgfwd.rank import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
            "    pass\nprint(json.dumps(sorted(sys.modules)), file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "dbgfwd-rank" in res.stdout, res.stdout
    loaded = set(json.loads(res.stderr.strip().splitlines()[-1]))
    assert not loaded & {"dbgfwd.rank.collectives", "dbgfwd.rank.debuggee", "dbgfwd.rank.markers",
                         "dbgfwd.rank.stackdump", "inspect", "debugpy"}, loaded
