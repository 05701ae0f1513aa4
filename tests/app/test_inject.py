"""`dbgfwd attach --inject` on this machine: a real torchrun job started WITHOUT dbgfwd-rank is made debuggable
while it runs, attached through launch.json, debugged rank by rank, and survives a long hold at a breakpoint."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from dbgfwd.rank import markers
from tests.support import cli
from tests.support.dap import DapClient
from tests.support.torchjob import PG_TIMEOUT, hold_past_the_timeout, release, start_job, stop_at_break, torch_or_skip

HOLD = 12  # seconds at a breakpoint: half as long again as the program's own PG_TIMEOUT (8 s)
EXPRESSION = "f'{rank}:{reduced}'"


def test_a_running_torchrun_job_is_injected_attached_debugged_and_survives_a_hold(tmp_path, port_block):
    torch_or_skip()
    base, master, local_base = port_block(4), port_block(1, start=40000), port_block(4, start=30000)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    job = start_job(tmp_path / "job", [torchrun, "--nproc-per-node", "4", "--master-addr", "127.0.0.1",
                                       "--master-port", str(master)], 4, base, under_dbgfwd=False)
    ws = tmp_path / "ws"
    ws.mkdir()
    bg = None
    try:
        assert markers.read_markers(job.runtime) == []  # nothing of dbgfwd's in the job yet
        before = job.steps(0)
        bg = cli.Background("attach", "--provider", "local", "--inject", "--match", re.escape(str(job.program)),
                            "--runtime-dir", str(job.runtime), "--base-port", str(base),
                            "--local-base-port", str(local_base), "--workspace", str(ws), log=tmp_path / "attach.log")
        cli.wait_ready(ws, timeout=120, bg=bg)
        ports = cli.launch_ports(ws / ".vscode" / "launch.json")
        assert ports == {r: local_base + r for r in range(4)}, bg.output()

        report = json.loads((ws / ".dbgfwd" / "inject.json").read_text())
        ranks = sorted(report[0]["ranks"], key=lambda r: r["rank"])
        assert [(r["rank"], r["state"], r["port"]) for r in ranks] == [(i, "injected", base + i) for i in range(4)]
        for r in ranks:
            assert any("collective timeout 0:00:08 -> 2h" in a for a in r["applied"]), r
            assert "TCP_NODELAY" in r["applied"] and "stack handler" in r["applied"], r
        found = {m.rank: m for m in markers.read_markers(job.runtime)}
        assert sorted(found) == [0, 1, 2, 3] and {m.source for m in found.values()} == {"torchrun"}
        assert {m.pid for m in found.values()} == {r["pid"] for r in ranks}
        assert job.steps(0) > before, "the job did not run on during the injection"

        # Through every forward: each rank stopped after its all_reduce shows its own rank and the sum.
        for rank, port in ports.items():
            client, thread_id, frame_id = stop_at_break(port, job.program)
            assert client.evaluate(EXPRESSION, frame_id) == repr(f"{rank}:10.0")
            release(client, thread_id, job.program)

        # `dbgfwd stacks` works on injected ranks (the handler was installed by the injection).
        stacks = cli.run("stacks", "--workspace", str(ws), "--json", timeout=60)
        assert stacks.returncode == 0, stacks.stderr
        doc = json.loads(stacks.stdout)
        assert sorted(r["rank"] for r in doc["ranks"] if not r["error"]) == [0, 1, 2, 3], doc

        # Hold rank 2 well past the program's own 8 s collective timeout: the raised timeout keeps the job.
        hold_past_the_timeout(job, ports[2], HOLD, EXPRESSION, repr("2:10.0"))
        assert "Timed out" not in job.output()
        assert HOLD > PG_TIMEOUT
    finally:
        if bg is not None:
            assert bg.stop() == 130, bg.output()
        job.stop()



def test_my_job_is_hung_right_now_inject_then_stacks_then_the_odd_rank(tmp_path, port_block):
    """The README's path on a real hung torchrun job started without dbgfwd-rank: rank 3 loops in its data
    loader while ranks 0-2 wait inside all_reduce (their main threads in C, in a system call: entered directly).
    inject; `stacks` names rank 3; a debugger on rank 3 stops in the loop; released, the job goes on."""
    from tests.support.torchjob import HANG_LOOP_LINE, HANG_PROGRAM, HANG_REDUCE_LINE

    torch_or_skip()
    base, master, local_base = port_block(4), port_block(1, start=40000), port_block(4, start=30000)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    job = start_job(tmp_path / "job", [torchrun, "--nproc-per-node", "4", "--master-addr", "127.0.0.1",
                                       "--master-port", str(master)], 4, base, program_text=HANG_PROGRAM,
                    under_dbgfwd=False, env={"DBGFWD_TEST_PG_TIMEOUT": "300"})
    ws = tmp_path / "ws"
    ws.mkdir()
    bg = None
    try:
        job.wait_steps(0, 10)
        time.sleep(0.5)
        assert job.steps(0) == 10  # hung: rank 3 never joins the 11th all_reduce
        bg = cli.Background("attach", "--provider", "local", "--inject", "--match", re.escape(str(job.program)),
                            "--runtime-dir", str(job.runtime), "--base-port", str(base),
                            "--local-base-port", str(local_base), "--workspace", str(ws), log=tmp_path / "attach.log")
        cli.wait_ready(ws, timeout=120, bg=bg)
        report = {r["rank"]: r for r in json.loads((ws / ".dbgfwd" / "inject.json").read_text())[0]["ranks"]}
        assert {r: (v["state"], v["how"]) for r, v in report.items()} == {
            0: ("injected", "main-thread"), 1: ("injected", "main-thread"), 2: ("injected", "main-thread"),
            3: ("injected", "pending-call")}, report

        res = cli.run("stacks", "--workspace", str(ws), "--json", timeout=120)
        assert res.returncode == 0, res.stderr
        groups = json.loads(res.stdout)["groups"]
        assert [g["ranks"] for g in groups] == [[3], [0, 1, 2]]
        top = groups[0]["frames"][0]
        assert top["function"] == "load_batch" and top["line"] in (HANG_LOOP_LINE, HANG_LOOP_LINE + 1)
        mine = next(f for f in groups[1]["frames"] if f["file"] == str(job.program))
        assert mine["line"] == HANG_REDUCE_LINE

        ports = cli.launch_ports(ws / ".vscode" / "launch.json")
        client = DapClient("127.0.0.1", ports[3], timeout=60)
        client.attach({str(job.program): [HANG_LOOP_LINE]})
        thread_id = client.wait_stopped(60)["body"]["threadId"]
        frame = client.top_frame(thread_id)
        assert (frame["line"], client.evaluate("(rank, step)", frame["id"])) == (HANG_LOOP_LINE, "(3, 10)")
        (job.progress / "release").touch()
        release(client, thread_id, job.program)
        for rank in range(4):
            job.wait_steps(rank, 20)  # the job goes on, every rank
        assert job.proc.poll() is None
    finally:
        if bg is not None:
            assert bg.stop() == 130, bg.output()
        job.stop()

# ---- the command's edges: bad input, nothing found, nothing injectable ----

LOOP = '''\
import os, time
while True:
    time.sleep(0.05)
'''


def test_inject_options_without_inject_and_bad_patterns_are_usage_errors(tmp_path):
    for args, words in ((["--match", "train.py"], "--match and --collective-timeout go with --inject"),
                        (["--inject", "--match", "train[("], "is not a regular expression"),
                        (["--inject", "--collective-timeout", "soon"], "--collective-timeout: not a duration"),
                        (["--inject", "--provider", "batch", "0b7f3a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "--region", "us-east-1"],
                         "--inject needs to run commands where the ranks run")):
        res = cli.run("attach", *args, "--workspace", str(tmp_path), timeout=60)
        assert res.returncode == 2, (args, res.stderr)
        (line,) = res.stderr.strip().splitlines()
        assert words in line, (args, line)
    assert not (tmp_path / ".vscode").exists() and not (tmp_path / ".dbgfwd").exists()


def test_no_rank_process_exits_3_and_none_injectable_exits_12(tmp_path, port_block):
    import os
    import subprocess

    tag = f"inject_edge_{os.getpid()}.py"
    res = cli.run("attach", "--inject", "--match", tag, "--workspace", str(tmp_path), timeout=60)
    assert res.returncode == 3, res.stderr
    assert "no rank processes found on 1 target(s)" in res.stderr

    program = tmp_path / tag
    program.write_text(LOOP)
    env = dict(os.environ, RANK="0", LOCAL_RANK="0")
    proc = subprocess.Popen([sys.executable, str(program)], env=env, start_new_session=True)
    try:
        time.sleep(0.5)
        listed = cli.run("attach", "--inject", "--match", tag, "--list", "--json", "--base-port", str(port_block(2)),
                         "--workspace", str(tmp_path), timeout=60)
        assert listed.returncode == 0, listed.stderr
        (target,) = json.loads(listed.stdout)["inject"]
        assert [(r["pid"], r["state"]) for r in target["ranks"]] == [(proc.pid, "injectable")]
        failed = cli.run("attach", "--inject", "--match", tag, "--workspace", str(tmp_path), timeout=60,
                         env={"DBGFWD_GDB": str(tmp_path / "no-gdb")})
        assert failed.returncode == 12, failed.stderr
        assert "gdb is not installed here" in failed.stdout + failed.stderr
        assert failed.stderr.strip().splitlines()[-1].startswith("dbgfwd: error: no rank could be made debuggable")
        assert not (tmp_path / ".vscode").exists()
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_the_rank_bundle_holds_every_dbgfwd_module_its_code_imports(tmp_path):
    """The injector runs from the bundle alone on the rank's machine: every `dbgfwd.*` import in it, the
    lazy ones inside functions included, must be in it (a lazy import of dbgfwd.platform was not, and the
    injector failed on every remote host)."""
    import ast
    import io
    import tarfile

    from dbgfwd.app.inject import rank_bundle

    with tarfile.open(fileobj=io.BytesIO(rank_bundle()), mode="r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    shipped = {name[:-3].replace("/", ".").removesuffix(".__init__") for name in files if name.endswith(".py")}
    missing = set()
    for name, source in files.items():
        if not name.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dbgfwd"):
                if node.module not in shipped:
                    missing.add((name, node.module))
            elif isinstance(node, ast.Import):
                missing |= {(name, a.name) for a in node.names if a.name.startswith("dbgfwd") and a.name not in shipped}
    assert not missing, sorted(missing)
