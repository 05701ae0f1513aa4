"""The injector's target side (dbgfwd.rank.inject) on real processes: which processes are ranks, injecting
at a safe point or into a main thread blocked in a system call, debugpy brought when the interpreter has
none, and each way it must refuse: no gdb, ptrace refused, another user's process, a process that exits
meanwhile, a process that is not Python. A refused process always runs on."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from dbgfwd.app.inject import rank_bundle
from dbgfwd.rank import inject, markers
from tests.support.dap import DapClient
from tests.support.procinfo import kill_group
from tests.test_shared_machine import OTHER, SYSTEM_PYTHON, other  # noqa: F401  (the second user fixture)

pytestmark = pytest.mark.timeout(180)

LOOP = '''\
import os, sys, time
rank = int(os.environ["RANK"])
while True:
    value = rank * 100 + 7
    time.sleep(0.05)
'''
LOOP_BREAK = 4
# Blocked in read(2) on stdin until the test writes a byte: the hung rank whose main thread runs no Python.
BLOCKED = '''\
import os, sys, time
rank = int(os.environ["RANK"])
sys.stdin.buffer.read(1)
while True:
    value = rank * 100 + 7
    time.sleep(0.05)
'''
# A rank that forks a child inheriting its environment and command line (as a data loader worker does).
FORKING = '''\
import os, time
if os.fork() == 0:
    while True:
        time.sleep(1)
while True:
    time.sleep(0.05)
'''


@pytest.fixture
def job(tmp_path):
    """Starts processes with a rank environment; kills them all at the end."""
    procs: list[subprocess.Popen] = []
    runtime = tmp_path / "run"

    def start(program: str, rank: int, local: int, name: str = "prog.py", flags=(), stdin=None,
              argv=None) -> subprocess.Popen:
        path = tmp_path / name
        path.write_text(program)
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(local), WORLD_SIZE="4", DBGFWD_RUNTIME_DIR=str(runtime))
        proc = subprocess.Popen(argv or [sys.executable, *flags, str(path)], env=env, cwd=tmp_path,
                                stdin=stdin or subprocess.DEVNULL, start_new_session=True)
        procs.append(proc)
        return proc

    start.runtime = runtime
    yield start
    for p in procs:
        kill_group(p)


def _bundle(tmp_path: Path) -> str:
    import tempfile

    bundle = Path(tempfile.mkdtemp(dir=tmp_path, prefix="bundle."))
    os.symlink(Path(inject.__file__).parents[1], bundle / "dbgfwd")
    return str(bundle)


def _request(tmp_path: Path, base: int, pattern: str, mode: str = "inject", **extra) -> dict:
    return {"mode": mode, "base_port": base, "match": re.escape(pattern), "bundle": _bundle(tmp_path),
            "collective_timeout": None, "timeout": 20, **extra}


def _by_rank(report: dict) -> dict:
    return {r["rank"]: r for r in report["ranks"]}


def _wait_alive_for(proc: subprocess.Popen, seconds: float = 0.5) -> None:
    time.sleep(seconds)  # a process that survived what was done to it: still there a moment later
    assert proc.poll() is None


def _wait_started(proc: subprocess.Popen, what: bytes = b"prog.py") -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if what in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
                time.sleep(0.3)  # the interpreter is up and in its loop
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError("process did not start")


def _debug(port: int, program: Path, line: int, expression: str, then=None) -> str:
    client = DapClient("127.0.0.1", port, timeout=30)
    try:
        client.attach({str(program): [line]})
        if then:
            then()
        thread_id = client.wait_stopped(30)["body"]["threadId"]
        frame = client.top_frame(thread_id)
        value = client.evaluate(expression, frame["id"])
        client.request("setBreakpoints", {"source": {"path": str(program)}, "breakpoints": []})
        client.continue_(thread_id)
        client.disconnect()
        return value
    finally:
        client.close()


def test_ranks_are_python_processes_with_a_rank_environment_not_their_children(tmp_path, job, port_block):
    base = port_block(4)
    r0 = job(FORKING, 0, 0, name="fork_prog.py")
    r1 = job(LOOP, 1, 1, name="loop_prog.py")
    no_rank = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", str(tmp_path / "x_prog.py")],
                               start_new_session=True)
    shell = job("", 2, 2, name="unused.py", argv=["sh", "-c", "sleep 600; :", str(tmp_path / "sh_prog.py")])
    try:
        for p in (r0, r1):
            _wait_started(p)
        report = inject.run(_request(tmp_path, base, str(tmp_path) + "/", mode="scan"))
        ranks = _by_rank(report)
        assert sorted(ranks) == [0, 1], report  # the forked child of rank 0 is not a rank
        assert ranks[0]["pid"] == r0.pid and ranks[1]["pid"] == r1.pid
        assert [(ranks[r]["state"], ranks[r]["port"], ranks[r]["source"]) for r in (0, 1)] == \
            [("injectable", base, "torchrun"), ("injectable", base + 1, "torchrun")]
        others = {o["pid"]: o["reason"] for o in report["others"]}
        assert others[no_rank.pid].startswith("no rank environment")
        assert others[shell.pid] == f"not a Python process ({os.path.basename(os.path.realpath('/bin/sh'))})"
        assert not markers.read_markers(job.runtime)  # a scan changes nothing
    finally:
        no_rank.kill()
        no_rank.wait()


def test_a_rank_is_injected_at_a_safe_point_and_debugged(tmp_path, job, port_block):
    base = port_block(4)
    proc = job(LOOP, 3, 2)
    _wait_started(proc)
    report = inject.run(_request(tmp_path, base, str(tmp_path / "prog.py")))
    (rank,) = report["ranks"]
    assert (rank["rank"], rank["state"], rank["how"], rank["port"]) == (3, "injected", "pending-call", base + 2), rank
    assert rank["applied"][0].endswith("(its own)") and "TCP_NODELAY" in rank["applied"], rank
    (marker,) = markers.read_markers(job.runtime)
    assert (marker.pid, marker.rank, marker.local_rank, marker.port, marker.host) == \
        (proc.pid, 3, 2, base + 2, "127.0.0.1")
    assert marker.stack_signal and marker.argv == (str(tmp_path / "prog.py"),)
    assert _debug(base + 2, tmp_path / "prog.py", LOOP_BREAK, "value") == "307"
    # Injected once: a second pass finds it debuggable and leaves it alone.
    again = inject.run(_request(tmp_path, base, str(tmp_path / "prog.py")))
    assert again["ranks"][0]["state"] == "ready", again
    _wait_alive_for(proc)


def test_a_main_thread_blocked_in_a_system_call_is_entered_directly(tmp_path, job, port_block):
    """The hung rank: its main thread never reaches a safe point, so the pending call cannot run; gdb calls the
    bootstrap on that thread. After the program goes on, breakpoints in the main thread hit."""
    base = port_block(4)
    proc = job(BLOCKED, 1, 0, stdin=subprocess.PIPE)
    _wait_started(proc)
    report = inject.run(_request(tmp_path, base, str(tmp_path / "prog.py")))
    (rank,) = report["ranks"]
    assert (rank["state"], rank["how"]) == ("injected", "main-thread"), rank["reason"]

    def unblock():
        proc.stdin.write(b"x")
        proc.stdin.flush()

    assert _debug(base, tmp_path / "prog.py", 6, "value", then=unblock) == "107"
    _wait_alive_for(proc)


def test_an_interpreter_without_debugpy_gets_dbgfwd_s_copy(tmp_path, job, port_block):
    """-S: this interpreter sees no site-packages, so no debugpy; the scan says so and the copy is used."""
    import debugpy

    base = port_block(4)
    proc = job(LOOP, 0, 0, flags=("-S",))
    _wait_started(proc)
    scan = inject.run(_request(tmp_path, base, str(tmp_path / "prog.py"), mode="scan"))
    assert scan["ranks"][0]["needs_debugpy"] is True, scan
    lib = tmp_path / "lib"
    lib.mkdir()
    os.symlink(Path(debugpy.__file__).parent, lib / "debugpy")

    without = inject.run(_request(tmp_path, base, str(tmp_path / "prog.py")))
    (failed,) = without["ranks"]
    assert failed["state"] == "failed" and "pip install debugpy" in failed["reason"], failed
    # The failed bootstrap set its once-per-process flag: a new process takes the copy.
    proc.kill()
    proc.wait()
    proc = job(LOOP, 0, 0, flags=("-S",))
    _wait_started(proc)
    report = inject.run(_request(tmp_path, base, str(tmp_path / "prog.py"), debugpy_dir=str(lib)))
    (rank,) = report["ranks"]
    assert rank["state"] == "injected" and rank["applied"][0].endswith("(brought by dbgfwd)"), rank
    assert _debug(base, tmp_path / "prog.py", LOOP_BREAK, "value") == "7"


def test_no_gdb_is_said_and_nothing_is_touched(tmp_path, job, port_block, monkeypatch):
    monkeypatch.setenv(inject.GDB_ENV, str(tmp_path / "no-such-gdb"))
    proc = job(LOOP, 0, 0)
    _wait_started(proc)
    report = inject.run(_request(tmp_path, port_block(4), str(tmp_path / "prog.py")))
    (rank,) = report["ranks"]
    assert rank["state"] == "failed" and rank["reason"].startswith("gdb is not installed here"), rank
    assert "apt-get install gdb" in rank["reason"]
    assert not markers.read_markers(job.runtime)
    _wait_alive_for(proc)


def test_a_process_that_exits_during_injection_is_reported(tmp_path, job, port_block):
    """Killed the moment gdb has attached (its TracerPid is set): the injector says so and goes on."""
    proc = job(BLOCKED, 0, 0, stdin=subprocess.PIPE)
    _wait_started(proc)

    def kill_when_traced():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            if re.search(r"^TracerPid:\s+[1-9]", status, re.M):
                os.kill(proc.pid, signal.SIGKILL)
                return
            time.sleep(0.001)

    killer = threading.Thread(target=kill_when_traced)
    killer.start()
    report = inject.run(_request(tmp_path, port_block(4), str(tmp_path / "prog.py")))
    killer.join()
    (rank,) = report["ranks"]
    assert (rank["state"], rank["reason"]) == ("failed", "the process exited during injection"), rank


def test_a_rank_killed_but_not_yet_reaped_while_gdb_runs_is_reported_as_exited(tmp_path, job, port_block,
                                                                                 monkeypatch):
    """The interleaving CI met: the rank dies while gdb is in it, gdb reports some other failure ("Target 'None'
    cannot support this command."), and the dead rank is a zombie its parent has not reaped yet, so its /proc
    entry is still there. It must still be said as an exit, not as gdb's error."""
    proc = job(BLOCKED, 0, 0, stdin=subprocess.PIPE)
    _wait_started(proc)

    def gdb_while_the_rank_dies(gdb, pid, script, workdir, timeout):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while b") Z " not in Path(f"/proc/{pid}/stat").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert os.path.exists(f"/proc/{pid}")  # a zombie: killed, not reaped (the test is its parent)
        return "Target 'None' cannot support this command.\n"

    monkeypatch.setattr(inject, "_run_gdb", gdb_while_the_rank_dies)
    (rank,) = inject.run(_request(tmp_path, port_block(4), str(tmp_path / "prog.py")))["ranks"]
    assert (rank["state"], rank["reason"]) == ("failed", "the process exited during injection"), rank


# ---- another user ----

def _as_other(code: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(["runuser", "-u", OTHER, "--", "env", *(f"{k}={v}" for k, v in (env or {}).items()),
                             SYSTEM_PYTHON, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd="/", start_new_session=True)


def _rank_pid(tag: str, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    cmd = Path(f"/proc/{name}/cmdline").read_bytes()
                except OSError:
                    continue
                if tag.encode() in cmd and cmd.startswith(SYSTEM_PYTHON.encode()):
                    return int(name)
        time.sleep(0.05)
    raise AssertionError(f"no process {tag}")


def test_another_users_rank_is_never_touched(tmp_path, port_block, other):  # noqa: F811
    tag = f"dbgfwd-test-{os.getpid()}-other"
    victim = _as_other("import time\nwhile True: time.sleep(0.1)", tag, env={"RANK": "0", "LOCAL_RANK": "0"})
    try:
        pid = _rank_pid(tag)
        report = inject.run(_request(tmp_path, port_block(4), tag))
        assert report["ranks"] == []
        (seen,) = [o for o in report["others"] if o["pid"] == pid]
        assert seen["reason"].startswith(f"belongs to uid {other[0]}, not to you"), seen
        assert victim.poll() is None
    finally:
        kill_group(victim)


# The other user runs both sides: a rank that made itself non-dumpable (as hardened programs do), and the
# injector, which may neither read its environment nor ptrace it.
NON_DUMPABLE = "import ctypes, time\nctypes.CDLL(None).prctl(4, 0, 0, 0, 0)\nwhile True: time.sleep(0.1)"
AGENT_AS_OTHER = '''
import io, json, os, sys, tarfile, tempfile
home = tempfile.mkdtemp()
tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read()), mode="r:gz").extractall(home)
sys.path.insert(0, home)
from dbgfwd.rank import inject
request = {"mode": "scan", "base_port": int(sys.argv[1]), "match": sys.argv[2], "bundle": home, "timeout": 20}
report = inject.run(request)
rank = inject.Rank(pid=int(sys.argv[3]), rank=0, local_rank=0, port=int(sys.argv[1]), python="3.11",
                   state="injectable")
inject.inject_one(rank, request, home, inject.find_gdb(), 20)
print(json.dumps({"report": report, "forced": rank.reason}))
'''


def test_ptrace_refused_on_a_non_dumpable_process_is_said(tmp_path, port_block, other):  # noqa: F811
    tag = f"dbgfwd-test-{os.getpid()}-nodump"
    victim = _as_other(NON_DUMPABLE, tag, env={"RANK": "0", "LOCAL_RANK": "0"})
    try:
        pid = _rank_pid(tag)
        base = port_block(4)
        agent = subprocess.run(["runuser", "-u", OTHER, "--", SYSTEM_PYTHON, "-c", AGENT_AS_OTHER, str(base), tag,
                                str(pid)], input=rank_bundle(), capture_output=True, timeout=120, cwd="/")
        assert agent.returncode == 0, agent.stderr.decode()
        import json

        out = json.loads(agent.stdout)
        (seen,) = [o for o in out["report"]["others"] if o["pid"] == pid]
        assert seen["reason"].startswith("cannot read its environment (permission denied)"), seen
        # Even told to go ahead, gdb is refused, and the reason says what to change.
        assert out["forced"].startswith("ptrace was refused"), out
        assert "SYS_PTRACE" in out["forced"]
        assert victim.poll() is None
    finally:
        kill_group(victim)


def test_the_rank_bundle_holds_only_what_runs_in_a_rank():
    names = tarfile.open(fileobj=io.BytesIO(rank_bundle()), mode="r:gz").getnames()
    assert "dbgfwd/rank/injected.py" in names and "dbgfwd/rank/inject.py" in names
    assert not [n for n in names if n.startswith(("dbgfwd/providers", "dbgfwd/cli", "dbgfwd/engine"))]
    assert not [n for n in names if "__pycache__" in n]
