"""`dbgfwd stacks` on local ranks: real processes under dbgfwd-rank, signalled and read back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dbgfwd.app.stacks import RankStack, group
from dbgfwd.rank import stackdump
from dbgfwd.rank.stackdump import DumpRequest, Frame, ThreadStack, parse_command_output, parse_dump, stack_command
from dbgfwd.ui.stacks import rank_set_text
from tests.support import cli
from tests.support.ranks import local_ranks, start_rank, wait_for_markers, write_program

# Rank 2 is somewhere else (a data loader), the others wait: the hang users hunt for.
PROGRAM = '''\
import os, threading, time
rank = int(os.environ["RANK"])
def load_batch():
    while True:
        time.sleep(0.01)
def wait_for_others():
    while True:
        time.sleep(0.01)
threading.Thread(target=lambda: time.sleep(1000), daemon=True).start()
if rank == 2:
    load_batch()
else:
    wait_for_others()
'''


@pytest.fixture
def four(tmp_path, port_block):
    with local_ranks(tmp_path, port_block(4), 4, write_program(tmp_path, PROGRAM, name="prog.py")) as ranks:
        yield ranks


def _stacks(four, *args):
    return cli.run("stacks", "--provider", "local", "--runtime-dir", str(four["runtime"]), "--base-port",
                   str(four["base"]), *args)


def test_the_odd_rank_out_comes_first_and_the_job_goes_on(four):
    res = _stacks(four, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    program = str(four["program"])
    assert [g["ranks"] for g in out["groups"]] == [[2], [0, 1, 3]]
    odd, rest = out["groups"]
    assert odd["frames"][0] == {"file": program, "line": 5, "function": "load_batch"}
    assert rest["frames"][0] == {"file": program, "line": 8, "function": "wait_for_others"}
    assert [r["rank"] for r in out["ranks"]] == [0, 1, 2, 3]
    for r in out["ranks"]:
        assert r["error"] is None and r["pid"] == next(p.proc.pid for p in four["procs"] if p.rank == r["rank"])
        mains = [t for t in r["threads"] if t["main"]]
        assert len(mains) == 1 and mains[0]["name"] == "MainThread" and len(r["threads"]) >= 2
        # dbgfwd-rank's own frames (runpy, the launcher) below the program are left out
        assert mains[0]["frames"][-1]["function"] == "<module>" and mains[0]["frames"][-1]["file"] == program
    assert all(p.proc.poll() is None for p in four["procs"])  # dumping stops nobody

    human = _stacks(four)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0].startswith("rank 2 (1)") and f"{program}:5 in load_batch" in lines[1]
    assert "ranks 0-1, 3 (3)" in human.stdout and "other thread" in human.stdout
    every = _stacks(four, "--all-threads")
    assert every.stdout.count("thread 0x") >= 2


def test_dead_ranks_and_ranks_without_the_handler_say_why(four, tmp_path):
    four["procs"][1].stop(signal.SIGKILL)  # its marker stays behind, naming a dead pid
    plain = start_rank(four["program"], 4, 4, four["runtime"], base_port=four["base"], world_size=5,
                       extra_args=["--stack-signal", "0"])
    try:
        wait_for_markers(four["runtime"], {4}, procs=[plain])
        res = _stacks(four, "--json", "--timeout", "1")
        out = json.loads(res.stdout)
        by_rank = {r["rank"]: r for r in out["ranks"]}
        assert 1 not in by_rank  # a dead pid's marker is not a rank
        assert "py-spy" in by_rank[4]["error"] and not by_rank[4]["threads"]
        assert {tuple(g["ranks"]) for g in out["groups"]} == {(2,), (0, 3), (4,)}
        assert res.returncode == 0
    finally:
        plain.stop()


def test_no_ranks_is_exit_3(tmp_path):
    res = cli.run("stacks", "--provider", "local", "--runtime-dir", str(tmp_path / "none"), "--base-port", "1")
    assert res.returncode == 3 and "no ranks found" in res.stderr


def test_a_handler_the_program_had_is_chained_not_replaced(tmp_path):
    """The program's own handler for the stack signal still runs, and the dump is written too."""
    mine = tmp_path / "mine"
    prog = tmp_path / "p.py"
    prog.write_text(
        "import signal, sys, time\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        f"signal.signal(signal.SIGUSR2, lambda s, f: open({str(mine)!r}, 'a').write('x'))\n"
        "from dbgfwd.rank import stackdump\n"
        f"h = stackdump.install({str(tmp_path)!r}, signal.SIGUSR2)\n"
        "print(h.path, flush=True)\n"
        "while True:\n    time.sleep(0.01)\n")
    p = subprocess.Popen([sys.executable, str(prog)], stdout=subprocess.PIPE, text=True)
    try:
        path = p.stdout.readline().strip()
        out = subprocess.run(["sh", "-c", stack_command([DumpRequest(p.pid, signal.SIGUSR2, path)], 5)],
                             capture_output=True, text=True, timeout=30).stdout
        threads = parse_dump(parse_command_output(out)[p.pid])
        assert threads and threads[0].frames[0].function == "<module>"
        deadline = time.monotonic() + 10
        while not mine.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mine.read_text() == "x" and p.poll() is None
    finally:
        p.kill()
        p.wait(10)


def test_the_stack_file_is_private_and_never_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    link = tmp_path / stackdump.STACK_FILE.format(pid=os.getpid())
    link.symlink_to(victim)
    assert stackdump.install(tmp_path, signal.SIGUSR2) is None  # a planted link: no handler, nothing written
    assert victim.read_text() == "keep"
    link.unlink()
    handler = stackdump.install(tmp_path, signal.SIGUSR2)
    try:
        assert handler is not None and (handler.path.stat().st_mode & 0o777) == 0o600
    finally:
        import faulthandler

        faulthandler.unregister(signal.SIGUSR2)


FAULTHANDLER_TEXT = '''\
Thread 0x00007f0000000002 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 320 in wait
  File "/app/train.py", line 9 in <lambda>

Current thread 0x00007f0000000001 (most recent call first):
  File "/app/train.py", line 14 in step
  File "/app/train.py", line 30 in <module>
  File "/x/dbgfwd/rank/launcher.py", line 201 in _run
  File "/usr/lib/python3.11/runpy.py", line 291 in run_path
'''


def test_parse_dump_and_grouping():
    threads = parse_dump(FAULTHANDLER_TEXT)
    assert [(t.id, t.current) for t in threads] == [(0x7F0000000002, False), (0x7F0000000001, True)]
    assert threads[1].frames == [Frame("/app/train.py", 14, "step"), Frame("/app/train.py", 30, "<module>")]
    a = RankStack(0, "n0", 10, threads=threads, main_thread=0x7F0000000001)
    b = RankStack(1, "n0", 11, threads=parse_dump(FAULTHANDLER_TEXT), main_thread=0x7F0000000001)
    c = RankStack(2, "n1", 12, threads=[ThreadStack(1, frames=[Frame("/app/data.py", 3, "load")])])
    d = RankStack(3, "n1", 13, error="no such process (pid 13)")
    groups = group([a, b, c, d])
    assert [g.ranks for g in groups] == [(2,), (3,), (0, 1)]  # smallest first; errors after stacks
    assert groups[1].error == "no such process (pid 13)"
    assert [rank_set_text(r) for r in ((0, 1, 2, 5), (3,))] == ["ranks 0-2, 5 (4)", "rank 3 (1)"]


def test_a_real_torchrun_hang_shows_the_rank_that_is_elsewhere(tmp_path, port_block):
    """4 gloo ranks under torchrun: at step 10 rank 3 loops in its data loader while ranks 0-2 block inside
    all_reduce (C++, holding no Python frame of theirs but the call). `stacks` sees both, stops nobody."""
    from tests.support.torchjob import HANG_LOOP_LINE, HANG_PROGRAM, HANG_REDUCE_LINE, start_job, torch_or_skip

    torch_or_skip()
    base, master = port_block(4), port_block(1, start=40000)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    job = start_job(tmp_path / "job", [torchrun, "--nproc-per-node", "4", "--master-addr", "127.0.0.1",
                                       "--master-port", str(master)], 4, base, program_text=HANG_PROGRAM)
    try:
        job.wait_steps(0, 10)
        time.sleep(0.5)
        assert job.steps(0) == 10  # stuck: rank 3 never joins the 11th all_reduce
        res = cli.run("stacks", "--provider", "local", "--runtime-dir", str(job.runtime), "--base-port", str(base),
                      "--json", timeout=120)
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        program = str(job.program)
        assert [g["ranks"] for g in out["groups"]] == [[3], [0, 1, 2]]
        odd, waiting = out["groups"]
        # In the loop: its test or, most of the time, the sleep below it. The signal can also land inside the
        # test's os.path.exists, whose stdlib frame is then the innermost one (a CI run met that).
        at = next(i for i, f in enumerate(odd["frames"]) if f["file"] == program)
        assert {f["function"] for f in odd["frames"][:at]} <= {"exists"}
        top = odd["frames"][at]
        assert top["function"] == "load_batch" and top["line"] in (HANG_LOOP_LINE, HANG_LOOP_LINE + 1)
        mine = next(f for f in waiting["frames"] if f["file"] == program)  # innermost frames are torch's own
        assert (mine["line"], mine["function"]) == (HANG_REDUCE_LINE, "<module>")
        assert "all_reduce" in {f["function"] for f in waiting["frames"]}

        human = cli.run("stacks", "--provider", "local", "--runtime-dir", str(job.runtime), "--base-port",
                        str(base), timeout=120)
        assert human.stdout.splitlines()[0].startswith("rank 3 (1)") and "ranks 0-2 (3)" in human.stdout
        (job.progress / "release").touch()
        for rank in range(4):
            job.wait_steps(rank, 20)  # the job goes on
    finally:
        job.stop()


def test_defaults_to_the_running_sessions_targets(four, tmp_path, port_block):
    ws = tmp_path / "ws"
    ws.mkdir()
    bg = cli.Background("attach", "--provider", "local", "--runtime-dir", str(four["runtime"]), "--base-port",
                        str(four["base"]), "--local-base-port", str(port_block(4, start=30000)), "--workspace",
                        str(ws), "--no-launch-json", log=tmp_path / "attach.log")
    try:
        cli.wait_ready(ws, bg=bg)
        # no provider, no targets, and the runtime dir only the session knows (DBGFWD_RUNTIME_DIR is elsewhere)
        res = cli.run("stacks", "--workspace", str(ws), "--json", env={"DBGFWD_RUNTIME_DIR": str(tmp_path / "x")})
        assert res.returncode == 0, res.stderr
        assert [g["ranks"] for g in json.loads(res.stdout)["groups"]] == [[2], [0, 1, 3]]
    finally:
        assert bg.stop() == 130, bg.output()


def test_the_dump_wait_on_a_host_is_bounded_by_the_clock_not_by_its_ticks(tmp_path):
    """Under load each 50 ms tick of the wait loop took far longer (its processes start slowly), so the loop ran
    past the caller's own limit and the output was cut before the last rank's section ("no answer from the
    target"). Here every `sleep` takes 0.4 s and the rank never writes: the wait still ends after ~`wait` s."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "sleep").write_text("#!/bin/sh\nexec /bin/sleep 0.4\n")
    (fake_bin / "sleep").chmod(0o755)
    rank = subprocess.Popen(["sh", "-c", "trap '' USR2; while :; do /bin/sleep 1; done"])
    stack_file = tmp_path / "stack"
    stack_file.write_text("")
    try:
        started = time.monotonic()
        out = subprocess.run(["sh", "-c", stack_command([DumpRequest(rank.pid, signal.SIGUSR2, str(stack_file))], 1)],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"})
        took = time.monotonic() - started
    finally:
        rank.kill()
        rank.wait(10)
    assert parse_command_output(out.stdout) == {rank.pid: ""}  # its section is there, empty
    assert took < 5, took  # 20 ticks of 0.4 s each (8 s) before
