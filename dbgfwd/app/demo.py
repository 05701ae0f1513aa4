"""`dbgfwd demo`: N local ranks of a bundled training-like program, attached and forwarded."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dbgfwd import lifecycle
from dbgfwd.app.attach import run_attach
from dbgfwd.app.options import AttachOptions
from dbgfwd.errors import DbgfwdError, PortError, WaitTimeout
from dbgfwd.plan.ports import MAX_PORT, port_is_free
from dbgfwd.rank import markers
from dbgfwd.ui.console import Console

DEMO_SCRIPT = "train.py"


@dataclass(frozen=True)
class DemoOptions:
    ranks: int = 4
    workspace: Path | None = None
    base_port: int = 5678
    duration: float | None = None
    start_timeout: float = 60.0
    keep: bool = False  # keep a temporary demo workspace after the demo (a --workspace given is always kept)


def _free_base(start: int, count: int) -> int:
    """The first base port at or above `start` whose `count` ports are all free (rank ports)."""
    base = start
    while base + count <= MAX_PORT:
        if all(port_is_free(base + i) for i in range(count)):
            return base
        base += 100
    raise PortError(f"no {count} consecutive free ports above {start}", hint="stop other debug sessions")


def prepare_workspace(opts: DemoOptions) -> Path:
    ws = Path(opts.workspace) if opts.workspace else Path(tempfile.mkdtemp(prefix="dbgfwd-demo-"))
    ws.mkdir(parents=True, exist_ok=True)
    source = resources.files("dbgfwd.templates").joinpath("demo_train.py").read_text()
    (ws / DEMO_SCRIPT).write_text(source)
    return ws


def break_line(ws: Path) -> int:
    for i, line in enumerate((ws / DEMO_SCRIPT).read_text().splitlines(), 1):
        if "BREAK HERE" in line and not line.lstrip().startswith(("#", '"')) and "=" in line:
            return i
    return 1


def start_ranks(ws: Path, count: int, base_port: int, runtime: Path) -> list[subprocess.Popen]:
    procs = []
    logs = ws / ".dbgfwd" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for rank in range(count):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(count),
                   DBGFWD_RUNTIME_DIR=str(runtime), PYTHONUNBUFFERED="1")
        with open(logs / f"rank{rank}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dbgfwd.rank", "--base-port", str(base_port), "--", DEMO_SCRIPT],
                cwd=ws, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            lifecycle.track_child(proc)  # killed if Ctrl-C cannot wait for stop_ranks
            procs.append(proc)
    return procs


def wait_markers(runtime: Path, count: int, procs: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(markers.read_markers(runtime)) < count:
        for i, p in enumerate(procs):
            if p.poll() is not None:
                raise DbgfwdError(f"demo rank {i} exited with code {p.returncode} before it was ready",
                                  hint="see its log in .dbgfwd/logs/ of the demo workspace")
        if time.monotonic() > deadline:
            raise WaitTimeout(f"demo ranks not ready after {timeout:g}s")
        if lifecycle.wait(0.05):
            return


def stop_ranks(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def run_demo(opts: DemoOptions, console: Console) -> Path:
    ws = prepare_workspace(opts)
    runtime = ws / ".dbgfwd" / "run"
    markers.ensure_runtime_dir(runtime)
    base = _free_base(opts.base_port, opts.ranks)
    console.info(f"demo workspace: {ws}")
    procs = start_ranks(ws, opts.ranks, base, runtime)
    try:
        with console.status(f"starting {opts.ranks} ranks under dbgfwd-rank..."):
            wait_markers(runtime, opts.ranks, procs, opts.start_timeout)
        if lifecycle.stop_requested():
            return ws
        attach = AttachOptions(workspace=ws, provider="local", provider_options={"runtime_dir": runtime},
                               base_port=base, launch_json=ws / ".vscode" / "launch.json",
                               remote_root=str(ws), duration=opts.duration)

        def ready(engine) -> None:
            console.info(f"{opts.ranks} ranks forwarded. Open {ws} in VS Code, set a breakpoint on "
                         f"{DEMO_SCRIPT}:{break_line(ws)} and start the \"dbgfwd: all ranks\" configuration. "
                         "Ctrl-C stops the demo.")
            if console.json:
                console.emit_json({"workspace": str(ws), "break_line": break_line(ws),
                                   "ranks": [r.as_dict() for r in engine.snapshot()]})

        from dbgfwd.ui.live import LiveView

        live = LiveView(console, emit_json=False)

        def on_ready(engine) -> None:
            ready(engine)
            live.start(engine)

        try:
            run_attach(attach, console, on_ready=on_ready)
        finally:
            live.stop()
    finally:
        stop_ranks(procs)
        shutil.rmtree(runtime, ignore_errors=True)
        if opts.workspace is None and not opts.keep:
            shutil.rmtree(ws, ignore_errors=True)  # demo folders must not pile up in /tmp
            console.info(f"removed the demo workspace {ws} (pass --keep to keep it)")
    return ws
