"""The rank launcher: env detection, marker lifecycle, program semantics (argv, __main__, exit code)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dbgfwd.rank import markers
from tests.conftest import free_port_block
from tests.support.ranks import NODELAY_PROBE


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
    text = ("import sys, json, os\nfrom dbgfwd.rank import markers\n"
            "ms = markers.read_markers()\n"
            "print(json.dumps({'argv': sys.argv, 'name': __name__, 'ports': [m.port for m in ms],"
            " 'ranks': [m.rank for m in ms]}))\nsys.exit(3)\n")
    res = _run(tmp_path, {"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "DBGFWD_RUNTIME_DIR": str(run)}, text,
               "--base-port", str(base))
    assert res.returncode == 3, res.stderr

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


# Prints, as JSON, TCP_NODELAY of the connected sockets (right after the launcher hands over: debugpy's own).
SOCKETS_PROGRAM = NODELAY_PROBE + """
import json, os, sys
print(json.dumps({"nodelay": _nodelay(), "frozen": sys._xoptions.get("frozen_modules"), "pid": os.getpid()}))
"""


def test_debugpys_adapter_connection_gets_tcp_nodelay(tmp_path):
    res = _run(tmp_path, {"RANK": "0", "LOCAL_RANK": "0"}, SOCKETS_PROGRAM, "--base-port", str(free_port_block(1)))
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["nodelay"] and all(got["nodelay"]), got


def test_plain_debugpy_leaves_nagle_on(tmp_path):
    """Why the launcher does it: debugpy itself (1.8.22, before its PR 2066) does not."""
    import debugpy

    prog = tmp_path / "plain.py"
    prog.write_text(f"import debugpy\ndebugpy.listen(('127.0.0.1', {free_port_block(1)}))\n" + SOCKETS_PROGRAM)
    res = subprocess.run([sys.executable, str(prog)], capture_output=True, text=True, timeout=60)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["nodelay"], res.stderr
    if tuple(int(p) for p in debugpy.__version__.split(".")[:3]) <= (1, 8, 22):
        assert not any(got["nodelay"]), got


def test_program_runs_without_frozen_modules_in_the_same_process(tmp_path):
    res = _run(tmp_path, {"RANK": "0", "LOCAL_RANK": "0"}, SOCKETS_PROGRAM, "--base-port", str(free_port_block(1)))
    got = json.loads(res.stdout.strip().splitlines()[-1])
    if sys.version_info >= (3, 11):
        assert got["frozen"] == "off"
    assert "frozen modules" not in res.stderr  # debugpy's four-line warning is gone
    assert "DBGFWD_RANK_REEXEC" not in res.stderr


def test_reexec_keeps_the_pid_that_the_launcher_started(tmp_path):
    """torchrun and mpirun watch the pid they started: the re-exec must replace the image, not fork."""
    prog = tmp_path / "pid.py"
    prog.write_text("import os, sys\nprint(os.getpid(), os.environ.get('DBGFWD_RANK_REEXEC'))\n")
    env = dict(os.environ, RANK="0", LOCAL_RANK="0")
    p = subprocess.Popen([sys.executable, "-m", "dbgfwd.rank", "--base-port", str(free_port_block(1)), "--",
                          str(prog)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = p.communicate(timeout=60)
    assert out.split() == [str(p.pid), "None"], err


def test_dash_c_runs_code_like_python(tmp_path):
    env = dict(os.environ, RANK="0", LOCAL_RANK="0")
    code = "import sys, __main__; print(sys.argv, __name__, __main__.__dict__ is globals()); sys.exit(4)"
    for args in (["--", "-c", code, "x"], ["-c", code, "x"]):
        res = subprocess.run([sys.executable, "-m", "dbgfwd.rank", "--base-port", str(free_port_block(1)), *args],
                             capture_output=True, text=True, env=env, timeout=60)
        assert res.returncode == 4, res.stderr
        assert res.stdout.strip() == "['-c', 'x'] __main__ True"


@pytest.mark.parametrize("args,message", [
    (["--", "missing.py"], "dbgfwd-rank: error: cannot open missing.py: no such file"),
    (["-m", "no_such_module_here"], "dbgfwd-rank: error: no module named 'no_such_module_here'"),
    ([], "dbgfwd-rank: error: nothing to run"),
])
def test_nothing_to_run_is_one_line_and_exit_2(tmp_path, args, message):
    res = subprocess.run([sys.executable, "-m", "dbgfwd.rank", *args], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), res.stderr


def test_module_mode_runs_as_main(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "job.py").write_text("import sys\nprint(__name__, sys.argv[1:])\n")
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    res = subprocess.run([sys.executable, "-m", "dbgfwd.rank", "--base-port", str(free_port_block(1)),
                          "-m", "mypkg.job", "a"], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "__main__ ['a']"


HEAVY = ("typer", "rich", "click", "paramiko", "kubernetes", "boto3", "botocore", "websocket", "yaml", "urllib3")


def test_launcher_imports_only_the_standard_library_and_debugpy(tmp_path):
    text = ("import json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n")
    res = _run(tmp_path, {"RANK": "0", "LOCAL_RANK": "0"}, text, "--base-port", str(free_port_block(1)))
    assert res.returncode == 0, res.stderr
    loaded = set(json.loads(res.stdout.strip().splitlines()[-1]))
    assert "debugpy" in loaded and not loaded & set(HEAVY), loaded & set(HEAVY)


def test_runs_in_a_venv_that_has_only_debugpy(tmp_path):
    """What a training image gets from `pip install --no-deps dbgfwd debugpy`: a full debug round works."""
    import debugpy

    from tests.support.dap import debug_round
    from tests.support.ranks import BREAK_LINE, write_program

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    repo = Path(__file__).resolve().parents[2]
    (site / "dbgfwd").symlink_to(repo / "dbgfwd")
    (site / "debugpy").symlink_to(Path(debugpy.__file__).parent)
    assert sorted(p.name for p in site.iterdir() if not p.name.startswith("_")) == ["dbgfwd", "debugpy"]
    probe = subprocess.run([str(python), "-c", "import typer"], capture_output=True, text=True, env={}, timeout=60)
    assert probe.returncode != 0  # the venv really lacks the CLI's dependencies

    base = free_port_block(1)
    program = write_program(tmp_path)
    run = tmp_path / "run"
    env = {"RANK": "0", "LOCAL_RANK": "0", "DBGFWD_RUNTIME_DIR": str(run), "PATH": os.environ["PATH"]}
    proc = subprocess.Popen([str(python), "-m", "dbgfwd.rank", "--base-port", str(base), "--", str(program)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not markers.read_markers(run):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()[-2000:]
            time.sleep(0.05)
        assert debug_round("127.0.0.1", base, str(program), BREAK_LINE, "value") == "7"
    finally:
        proc.kill()
        proc.wait(10)


def test_wait_for_client_rank0_holds_rank_0_until_a_debugger_attaches_and_lets_others_run(tmp_path):
    """The program's first line is a breakpoint: it can only be hit if the program waited for the debugger.
    Rank 1 (local rank 1) does not wait under `rank0` and runs to its end with nobody attached."""
    from tests.support.dap import DapClient
    from tests.support.ranks import start_rank, wait_for_markers

    prog = tmp_path / "prog.py"
    prog.write_text("first = 1\nprint('ran', first)\n")
    runtime, base = tmp_path / "run", free_port_block(2)
    procs = [start_rank(prog, r, r, runtime, base_port=base, world_size=2,
                        extra_args=["--wait-for-client", "rank0"]) for r in (0, 1)]
    try:
        assert procs[1].proc.wait(60) == 0  # did not wait
        assert "ran 1" in procs[1].log.read_text()
        wait_for_markers(runtime, {0}, procs=procs[:1])
        assert procs[0].proc.poll() is None  # still waiting: nothing attached yet
        client = DapClient("127.0.0.1", base, timeout=60)
        try:
            stopped = client.attach({str(prog): [1]}) and client.wait_stopped(60)
            assert client.top_frame(stopped["body"]["threadId"])["line"] == 1
            client.continue_(stopped["body"]["threadId"])
        finally:
            client.close()
        assert procs[0].proc.wait(60) == 0
        assert "ran 1" in procs[0].log.read_text()
    finally:
        for p in procs:
            p.stop()


SPAWNS_A_CHILD = """\
import subprocess, sys
child = subprocess.run([sys.executable, "-c", "import os; v = os.getpid(); print('child', v)"])
print("parent done", child.returncode)
"""


@pytest.mark.parametrize("sub_process", [True, False])
def test_sub_process_announces_the_ranks_children_to_the_debugger(tmp_path, sub_process):
    from tests.support.dap import DapClient, DapError
    from tests.support.ranks import start_rank, wait_for_markers

    prog = tmp_path / "prog.py"
    prog.write_text(SPAWNS_A_CHILD)
    runtime, base = tmp_path / "run", free_port_block(1)
    args = ["--wait-for-client", "all"] + (["--sub-process"] if sub_process else [])
    rank = start_rank(prog, 0, 0, runtime, base_port=base, extra_args=args)
    try:
        wait_for_markers(runtime, {0}, procs=[rank])
        client = DapClient("127.0.0.1", base, timeout=60)
        try:
            client.attach({})
            # a client that supports it is asked to start a child session (startDebugging), as VS Code is
            if sub_process:
                announced = client.wait_reverse_request("startDebugging", timeout=60)
                child = announced["arguments"]["configuration"]["subProcessId"]
                assert child not in (rank.proc.pid, None), announced
            else:
                try:
                    client.wait_event("terminated", timeout=60)  # the program ran to its end...
                except DapError:
                    pass  # (or the adapter closed first)
                assert not [r for r in client.reverse_requests if r["command"] == "startDebugging"]
                assert "child" in rank.log.read_text()  # ...and its child ran, unannounced
        finally:
            client.close()
    finally:
        rank.stop()
