"""The rank launcher: env detection, marker lifecycle, program semantics (argv, __main__, exit code)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from dbgfwd import markers
from tests.conftest import free_port_block


def _run(tmp_path, env_extra, program_text, *args, timeout=60):
    prog = tmp_path / "prog.py"
    prog.write_text(program_text)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "SLURM_LOCALID")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "dbgfwd.rank", *args, "--", str(prog), "a", "b"],
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_program_semantics_and_marker_lifecycle(tmp_path):
    base = free_port_block(2)
    run = tmp_path / "run"
    text = ("import sys, json, os\nfrom dbgfwd import markers\n"
            "ms = markers.read_markers()\n"
            "print(json.dumps({'argv': sys.argv, 'name': __name__, 'ports': [m.port for m in ms],"
            " 'ranks': [m.rank for m in ms]}))\nsys.exit(3)\n")
    res = _run(tmp_path, {"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "DBGFWD_RUNTIME_DIR": str(run)}, text,
               "--base-port", str(base))
    assert res.returncode == 3, res.stderr
    import json

    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"argv": [str(tmp_path / "prog.py"), "a", "b"], "name": "__main__", "ports": [base + 1],
                   "ranks": [5]}
    assert markers.read_markers(run, include_dead=True) == []  # removed on exit


def test_no_rank_environment_defaults_to_rank_0_and_says_so(tmp_path):
    base = free_port_block(1)
    res = _run(tmp_path, {"DBGFWD_RUNTIME_DIR": str(tmp_path / "run")}, "print('ran')\n", "--base-port", str(base))
    assert res.returncode == 0 and "ran" in res.stdout
    assert "no rank environment found" in res.stderr and "rank 0" in res.stderr


def test_marker_removed_on_sigterm(tmp_path):
    base = free_port_block(1)
    run = tmp_path / "run"
    prog = tmp_path / "sleep.py"
    prog.write_text("import time\nwhile True: time.sleep(0.1)\n")
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", DBGFWD_RUNTIME_DIR=str(run))
    p = subprocess.Popen([sys.executable, "-m", "dbgfwd.rank", "--base-port", str(base), "--", str(prog)], env=env)
    try:
        deadline = time.monotonic() + 30
        while not markers.read_markers(run) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert markers.read_markers(run), "marker never written"
        p.terminate()
        p.wait(20)
        assert p.returncode == -15
        assert markers.read_markers(run, include_dead=True) == []
    finally:
        if p.poll() is None:
            p.kill()


def test_busy_port_is_a_clear_error(tmp_path):
    import socket

    base = free_port_block(1)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers must not fail us
        s.bind(("127.0.0.1", base))
        s.listen(1)
        res = _run(tmp_path, {"RANK": "0", "LOCAL_RANK": "0", "DBGFWD_RUNTIME_DIR": str(tmp_path / "run")},
                   "print('should not run')\n", "--base-port", str(base))
    assert res.returncode == 4
    assert "cannot listen" in res.stderr and "should not run" not in res.stdout
