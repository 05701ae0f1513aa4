"""The in-code snippet: reads ranks exactly like dbgfwd-rank, listens on 127.0.0.1, marks readiness."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from datetime import timedelta
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from dbgfwd.rank import env as rankenv
from dbgfwd.rank import markers
from dbgfwd.templates import render_snippet
from tests.support import cli
from tests.support.dap import DapClient
from tests.support.ranks import NODELAY_PROBE, wait_for_markers
from tests.support.torchjob import torch_or_skip

ALL_VARS = sorted({v for s in rankenv.SOURCES for v in (s.rank, s.local_rank, s.world_size) if v})
TWO_HOURS = timedelta(hours=2)


def snippet_lookup(text: str):
    """The snippet's `_dbgfwd_rank` function, compiled on its own (nothing listens)."""
    tree = ast.parse(text)
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_dbgfwd_rank")
    namespace = {"os": os}
    exec(compile(ast.Module(body=[func], type_ignores=[]), "<snippet>", "exec"), namespace)
    return namespace["_dbgfwd_rank"]


def test_table_is_generated_from_rankenv():
    text = render_snippet(5678, 0, TWO_HOURS)
    for src in rankenv.SOURCES:
        assert repr((src.name, src.rank, src.local_rank, src.world_size)) in text
    assert '("127.0.0.1", _DBGFWD_BASE_PORT + _local_rank)' in text
    compile(text, "<snippet>", "exec")
    assert "_DBGFWD_WAIT_RANK = None" in render_snippet(5678, None, TWO_HOURS)


env_values = st.one_of(st.integers(-3, 300).map(str), st.sampled_from(["", " ", "x", " 7 ", "1.5"]))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(ALL_VARS), env_values, max_size=6))
def test_snippet_reads_the_same_rank_as_the_launcher(env):
    lookup = snippet_lookup(render_snippet(5678, 0, TWO_HOURS))
    with mock.patch.dict(os.environ, env, clear=True):
        got = lookup()
    want = rankenv.detect_or_default(env)
    assert got == (want.rank, want.local_rank, want.world_size, want.source)


def test_cli_prints_a_runnable_snippet(tmp_path, port_block):
    base = port_block(4, start=32000)
    res = cli.run("snippet", "--base-port", str(base), "--wait-rank", "3")
    assert res.returncode == 0, res.stderr
    program = tmp_path / "train.py"
    program.write_text(res.stdout + NODELAY_PROBE + "\nimport time\nstep = 0\nwhile True:\n    step += 1\n"
                       "    time.sleep(0.05)\n")
    break_line = res.stdout.count("\n") + NODELAY_PROBE.count("\n") + 5  # `step += 1`
    runtime = tmp_path / "run"
    env = dict(os.environ, OMPI_COMM_WORLD_RANK="3", OMPI_COMM_WORLD_LOCAL_RANK="2", OMPI_COMM_WORLD_SIZE="4",
               DBGFWD_RUNTIME_DIR=str(runtime))
    env.pop("RANK", None)
    proc = subprocess.Popen([sys.executable, str(program)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        (marker,) = wait_for_markers(runtime, {3}, timeout=60)
        assert (marker.local_rank, marker.port, marker.source, marker.world_size) == (2, base + 2, "openmpi", 4)
        listening = markers.parse_proc_net_tcp(open("/proc/net/tcp").read())
        assert ("127.0.0.1", base + 2) in listening and ("0.0.0.0", base + 2) not in listening
        # Rank 3 is blocked in wait_for_client until this client attaches, then hits the breakpoint.
        client = DapClient("127.0.0.1", base + 2, timeout=60)
        try:
            client.attach({str(program): [break_line]})
            thread = client.wait_stopped(60)["body"]["threadId"]
            frame = client.top_frame(thread)
            assert frame["line"] == break_line and client.evaluate("_rank", frame["id"]) == "3"
            assert client.evaluate("_nodelay()", frame["id"]) == "[1]"  # debugpy's own link, Nagle off
            client.continue_(thread)
        finally:
            client.disconnect()
    finally:
        proc.terminate()
        proc.wait(10)
    # SIGTERM skips atexit, so the file may stay; readers skip markers of dead processes.
    assert markers.read_markers(runtime) == []


def test_snippet_raises_torch_collective_timeouts_where_dbgfwd_is_installed(tmp_path, port_block):
    torch_or_skip()
    res = cli.run("snippet", "--base-port", str(port_block(1, start=32000)), "--no-wait",
                  "--collective-timeout", "3h")
    assert res.returncode == 0, res.stderr
    program = tmp_path / "train.py"
    program.write_text(
        "import os\nfrom datetime import timedelta\nimport torch, torch.distributed as dist\n"
        "dist.init_process_group('gloo', timeout=timedelta(seconds=8))\n"  # made BEFORE the snippet runs
        + res.stdout +
        "print('TIMEOUT', dist.group.WORLD._get_backend(torch.device('cpu')).options._timeout.total_seconds())\n")
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port_block(1, start=42000)), DBGFWD_RUNTIME_DIR=str(tmp_path / "run"))
    run = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "TIMEOUT 10800.0" in run.stdout
    assert "collective timeouts raised to 3h (from 0:00:08)" in run.stderr and "delete that line" in run.stderr


def test_cli_rejects_a_bad_port():
    res = cli.run("snippet", "--base-port", "70000")
    assert res.returncode == 2 and "--base-port" in res.stderr and "65535" in res.stderr


def test_the_snippet_commands_default_timeout_is_the_launchers():
    from dbgfwd.rank.collectives import DEFAULT

    res = cli.run("snippet", "--help")
    assert res.returncode == 0 and f"[default: {DEFAULT}]" in res.stdout, res.stdout
