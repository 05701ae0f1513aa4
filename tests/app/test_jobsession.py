"""The job session (dbgfwd.app.jobsession) with a client that behaves exactly like VS Code's Python extension:
4 real debugpy ranks each appear as a child session and stop at a breakpoint; rank 2 is killed and
restarted, and only rank 2 is announced again, its new process stopping at the breakpoint again."""

from __future__ import annotations

import json
import time

import pytest

from tests.support import cli
from tests.support.dap import DapError, ExtensionJobSession
from tests.support.ranks import BREAK_LINE, local_ranks, start_rank, wait_for_markers, write_program

pytestmark = pytest.mark.timeout(240)


def _job_port(ws) -> int:
    configs = json.loads((ws / ".vscode" / "launch.json").read_text())["configurations"]
    assert configs[0]["name"] == "dbgfwd: job", [c["name"] for c in configs]
    assert not [c for c in configs[1:] if "job" in c["name"]]
    port = configs[0]["connect"]["port"]
    assert cli.session(ws)["job_port"] == port
    return port


def _stop_and_read(child, expression: str = "rank") -> str:
    thread_id = child.wait_stopped(60)["body"]["threadId"]
    frame = child.top_frame(thread_id)
    value = child.evaluate(expression, frame["id"])
    child.request("setBreakpoints", {"source": {"path": child.program}, "breakpoints": []})
    child.continue_(thread_id)
    return value


def test_every_rank_appears_and_a_restarted_rank_reappears_on_its_own(tmp_path, port_block):
    program = write_program(tmp_path)
    base, local_base = port_block(4), port_block(5, start=30000)
    ws = tmp_path / "ws"
    ws.mkdir()
    with local_ranks(tmp_path, base, 4, program) as ranks:
        bg = cli.Background("attach", "--provider", "local", "--runtime-dir", str(ranks["runtime"]),
                            "--base-port", str(base), "--local-base-port", str(local_base + 1), "--workspace",
                            str(ws), log=tmp_path / "attach.log")
        editor = None
        children = {}
        try:
            cli.wait_ready(ws, bg=bg)
            port = _job_port(ws)
            assert port == local_base  # just below the ranks' own local ports
            editor = ExtensionJobSession(port)
            for _ in range(4):
                body = editor.next_attach()
                rank = body["subProcessId"]
                assert body["name"] == f"rank {rank} (localhost)" and body["request"] == "attach"
                assert body["type"] == "debugpy" and body["connect"] == {"host": "127.0.0.1",
                                                                         "port": local_base + 1 + rank}
                children[rank] = editor.child(body, {str(program): [BREAK_LINE]})
                children[rank].program = str(program)
            assert sorted(children) == [0, 1, 2, 3]
            for rank, child in sorted(children.items()):
                assert _stop_and_read(child) == str(rank)

            # Rank 2 dies (its child session ends with it) and is restarted: a new process behind the rank.
            ranks["procs"][2].stop(sig=9)
            with pytest.raises((DapError, OSError)):
                children[2].request("threads", timeout=30)
            children[2].close()
            restarted_at = time.monotonic()
            ranks["procs"][2] = start_rank(program, 2, 2, ranks["runtime"], base_port=base, world_size=4)
            wait_for_markers(ranks["runtime"], {2}, procs=[ranks["procs"][2]])
            body = editor.next_attach()
            assert body["subProcessId"] == 2, body
            again = editor.child(body, {str(program): [BREAK_LINE]})
            again.program = str(program)
            thread_id = again.wait_stopped(60)["body"]["threadId"]
            took = time.monotonic() - restarted_at
            frame = again.top_frame(thread_id)
            assert again.evaluate("rank", frame["id"]) == "2"
            print(f"rank restart -> stopped at the breakpoint again: {took:.2f} s")
            editor.sync()
            assert [b["subProcessId"] for b in editor.announced] == [0, 1, 2, 3, 2]
            assert [e for e in editor.parent.events if e.get("event") == "debugpyAttach"] == []
            lines = editor.console()
            assert "dbgfwd: rank 2 (localhost) attached" in lines
            assert any(line.startswith("dbgfwd: rank 2 (localhost) re-attached: a new process") for line in lines), lines
            children[2] = again
        finally:
            for child in children.values():
                child.close()
            if editor is not None:
                editor.close()
            assert bg.stop() == 130, bg.output()
