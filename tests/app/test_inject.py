"""`dbgfwd attach --inject` on this machine: a real torchrun job started WITHOUT dbgfwd-rank is made debuggable
while it runs, attached through launch.json, debugged rank by rank, and survives a long hold at a breakpoint."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from dbgfwd.rank import markers
from tests.support import cli
from tests.support.dap import DapClient
from tests.support.torchjob import BREAK_LINE, PG_TIMEOUT, start_job, torch_or_skip

HOLD = 20  # seconds at a breakpoint, well past the program's own PG_TIMEOUT
EXPRESSION = "f'{rank}:{reduced}'"


def _stop_at_break(port: int, program: Path) -> tuple[DapClient, int, int]:
    client = DapClient("127.0.0.1", port, timeout=60)
    client.attach({str(program): [BREAK_LINE]})
    thread_id = client.wait_stopped(60)["body"]["threadId"]
    return client, thread_id, client.top_frame(thread_id)["id"]


def _release(client: DapClient, thread_id: int, program: Path) -> None:
    client.request("setBreakpoints", {"source": {"path": str(program)}, "breakpoints": []})
    client.continue_(thread_id)
    client.disconnect()


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
        bg = cli.Background("attach", "--provider", "local", "--inject", "--match", "train.py",
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
            client, thread_id, frame_id = _stop_at_break(port, job.program)
            assert client.evaluate(EXPRESSION, frame_id) == repr(f"{rank}:10.0")
            _release(client, thread_id, job.program)

        # `dbgfwd stacks` works on injected ranks (the handler was installed by the injection).
        stacks = cli.run("stacks", "--workspace", str(ws), "--json", timeout=60)
        assert stacks.returncode == 0, stacks.stderr
        doc = json.loads(stacks.stdout)
        assert sorted(r["rank"] for r in doc["ranks"] if not r["error"]) == [0, 1, 2, 3], doc

        # Hold rank 2 well past the program's own 8 s collective timeout: the raised timeout keeps the job.
        client, thread_id, frame_id = _stop_at_break(ports[2], job.program)
        held_at = job.steps(0)
        time.sleep(HOLD)
        assert job.proc.poll() is None, job.output()[-3000:]
        assert job.steps(0) <= held_at + 1, "rank 0 went on while rank 2 was held: not really blocked"
        assert client.evaluate(EXPRESSION, frame_id) == repr("2:10.0")
        _release(client, thread_id, job.program)
        for rank in range(4):
            job.wait_steps(rank, held_at + 20)
        assert job.proc.poll() is None
        assert "Timed out" not in job.output()
        assert HOLD > PG_TIMEOUT
    finally:
        if bg is not None:
            assert bg.stop() == 130, bg.output()
        job.stop()
