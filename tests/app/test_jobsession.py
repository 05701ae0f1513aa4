"""The job session (dbgfwd.app.jobsession) with a client that behaves exactly like VS Code's Python extension:
4 real debugpy ranks each appear as a child session and stop at a breakpoint; rank 2 is killed and
restarted, and only rank 2 is announced again, its new process stopping at the breakpoint again."""

from __future__ import annotations

import json
import time

import pytest

from tests.support import cli
from tests.support.dap import ExtensionJobSession, assert_session_ends
from tests.support.ranks import BREAK_LINE, local_ranks, start_rank, wait_for_markers, write_program
from tests.test_shared_machine import other  # noqa: F401  (the second local user)

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
    base, local_base = port_block(5), port_block(6, start=30000)
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
            assert_session_ends(children[2])
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
            announced = [b["subProcessId"] for b in editor.announced]  # in the order the ranks became ready
            assert sorted(announced[:4]) == [0, 1, 2, 3] and announced[4:] == [2], announced
            assert [e for e in editor.parent.events if e.get("event") == "debugpyAttach"] == []
            lines = editor.console()
            assert "dbgfwd: rank 2 (localhost) attached" in lines
            assert any(line.startswith("dbgfwd: rank 2 (localhost) re-attached: a new process") for line in lines), lines
            children[2] = again

            # A rank that starts later (rank 4 joins) is attached when it appears, and only it.
            late = start_rank(program, 4, 4, ranks["runtime"], base_port=base, world_size=5)
            ranks["procs"].append(late)
            body = editor.next_attach()
            assert (body["subProcessId"], body["name"]) == (4, "rank 4 (localhost)"), body
            children[4] = editor.child(body, {str(program): [BREAK_LINE]})
            thread_id = children[4].wait_stopped(60)["body"]["threadId"]
            assert children[4].evaluate("rank", children[4].top_frame(thread_id)["id"]) == "4"
            editor.sync()
            assert [b["subProcessId"] for b in editor.announced][4:] == [2, 4]
        finally:
            for child in children.values():
                child.close()
            if editor is not None:
                editor.close()
            assert bg.stop() == 130, bg.output()


OTHER_CLIENT = """
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
body = b'{"seq": 1, "type": "request", "command": "initialize", "arguments": {}}'
c.sendall(b"Content-Length: %d\\r\\n\\r\\n" % len(body) + body)
try:
    print("answered" if c.recv(65536) else "closed", flush=True)
except ConnectionResetError:
    print("closed", flush=True)
"""


def test_job_ranks_on_demand_attach_rank_and_who_may_connect(tmp_path, port_block, other):  # noqa: F811
    """--job-ranks 0: only rank 0 by itself; `dbgfwd attach-rank 2` adds rank 2; nothing ever connects to rank 1.
    The endpoint listens on loopback only and closes another user's connection."""
    import subprocess

    from dbgfwd.rank.markers import parse_tcp_table
    from tests.test_shared_machine import OTHER, SYSTEM_PYTHON

    program = write_program(tmp_path)
    base, local_base = port_block(3), port_block(4, start=30000)
    ws = tmp_path / "ws"
    ws.mkdir()
    no_editor = cli.run("attach-rank", "1", "--workspace", str(ws))
    assert no_editor.returncode == 10 and "no running `dbgfwd attach`" in no_editor.stderr
    with local_ranks(tmp_path, base, 3, program) as ranks:
        bg = cli.Background("attach", "--provider", "local", "--runtime-dir", str(ranks["runtime"]),
                            "--base-port", str(base), "--local-base-port", str(local_base + 1), "--workspace",
                            str(ws), "--job-ranks", "0", log=tmp_path / "attach.log")
        editor = None
        try:
            cli.wait_ready(ws, bg=bg)
            port = _job_port(ws)
            listening = [s for s in parse_tcp_table(open("/proc/net/tcp").read()) if s.local_port == port
                         and s.state == "0A"]
            assert [s.local_ip for s in listening] == ["127.0.0.1"]
            refused = cli.run("attach-rank", "2", "--workspace", str(ws))
            assert refused.returncode == 10 and "no editor is connected to the job session" in refused.stderr

            other_client = subprocess.run(["runuser", "-u", OTHER, "--", SYSTEM_PYTHON, "-c", OTHER_CLIENT, str(port)],
                                          capture_output=True, text=True, timeout=30, cwd="/")
            assert other_client.stdout.strip() == "closed", other_client

            editor = ExtensionJobSession(port)
            assert editor.next_attach()["subProcessId"] == 0
            asked = cli.run("attach-rank", "2", "--workspace", str(ws), "--json")
            assert asked.returncode == 0, asked.stderr
            assert json.loads(asked.stdout)["announced"] == [2]
            assert editor.next_attach()["subProcessId"] == 2
            unknown = cli.run("attach-rank", "7", "--workspace", str(ws))
            assert unknown.returncode == 3 and "no rank 7 in this session" in unknown.stderr
            editor.sync()
            assert [b["subProcessId"] for b in editor.announced] == [0, 2]
            by_rank = {r["rank"]: r for r in cli.session(ws)["ranks"]}
            assert by_rank[1]["connections"] == 0  # the job session itself never connects to a rank
        finally:
            if editor is not None:
                editor.close()
            assert bg.stop() == 130, bg.output()


def test_two_announcers_at_once_send_a_rank_once():
    """The interleaving seen in CI (rank 0 announced twice: configurationDone and the poll loop both found it
    new), forced: announcer A is held inside the announcement; announcer B starts meanwhile. B must wait for A
    and then find the rank announced; before the fix it announced it again."""
    import socket
    import threading

    from dbgfwd.app.jobsession import JobSession, _Client, _messages
    from dbgfwd.engine import RankState, RankStatus
    from dbgfwd.plan.layout import PlannedRank

    status = RankStatus(planned=PlannedRank(rank=0, node="n", node_index=0, local_rank=0, remote_port=5678,
                                            target_key="n", local_port=6678),
                        target_name="n", target_status="running", state=RankState.READY, reason="", clients=0,
                        connections=0, failures=0, bytes_up=0, bytes_down=0, remote_root=None, generation=1)

    class Engine:
        def snapshot(self):
            return [status]

    a_inside, release, b_arrived = threading.Event(), threading.Event(), threading.Event()
    calls = []

    def config_for(st):
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            a_inside.set()
            release.wait(10)
        else:
            b_arrived.set()  # B got in while A was still announcing: the race
        return {"name": "rank 0 (n)"}

    job = JobSession(Engine(), config_for, 0)
    lock = job._announce_lock

    class Watched:  # the lock, telling when B starts waiting on it
        def __enter__(self):
            if not lock.acquire(blocking=False):
                b_arrived.set()
                lock.acquire()
            return self

        def __exit__(self, *exc):
            lock.release()

    job._announce_lock = Watched()
    ours, theirs = socket.socketpair()
    client = _Client(ours, "test")
    ranks = {0: status}
    try:
        a = threading.Thread(target=job._announce, args=(client, ranks), name="A")
        a.start()
        assert a_inside.wait(10)
        b = threading.Thread(target=job._announce, args=(client, ranks), name="B")
        b.start()
        assert b_arrived.wait(10)  # B is waiting for the lock (fixed) or announcing too (the race)
        release.set()
        a.join(10)
        b.join(10)
        ours.close()
        events = [m for m in _messages(theirs) if m.get("event") == "debugpyAttach"]
        assert len(events) == 1 and calls == ["A"], (events, calls)
    finally:
        job.stop()
        theirs.close()
