"""`dbgfwd attach` as a library: discover, plan, forward, write launch.json, report, until stopped."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Callable

from dbgfwd.app.options import AttachOptions, make_engine, options_record, validate
from dbgfwd.engine import Engine, RankStatus
from dbgfwd.ui.console import Console
from dbgfwd.vscode.tasks import task_workspace, wait_command
from dbgfwd.workspace import state

log = logging.getLogger("dbgfwd.session")


class LaunchWriter:
    """Rewrites launch.json when the rank set or a local port changes (never on state changes)."""

    def __init__(self, opts: AttachOptions, console: Console):
        self.opts = opts
        self.console = console
        self._last: tuple | None = None
        self.path = opts.launch_json

    def __call__(self, ranks: list[RankStatus]) -> None:
        if self.path is None:
            return
        from dbgfwd.vscode import AttachEntry, LaunchOptions, update_launch_json

        entries = [AttachEntry(rank=r.planned.rank, local_port=r.planned.local_port, node=r.target_name,
                               local_rank=r.planned.local_rank, remote_root=r.remote_root) for r in ranks]
        key = tuple(entries)
        if key == self._last:
            return
        self._last = key
        tasks = self.path.parent / "tasks.json"
        result = update_launch_json(self.path, entries,
                                    LaunchOptions(local_root=self.opts.local_root, remote_root=self.opts.remote_root,
                                                  just_my_code=self.opts.just_my_code,
                                                  wait_command=wait_command(),
                                                  workspace=task_workspace(self.path, self.opts.workspace)),
                                    tasks_path=tasks)
        if result.changed:
            self.console.info(f"wrote {len(entries)} attach configs to {self.path}")


class SessionWriter:
    """Writes session.json at most every `interval` seconds, from its own thread."""

    def __init__(self, workspace: Path, engine_ref: Callable[[], Engine], meta: dict, interval: float = 0.25):
        self.workspace = workspace
        self._engine = engine_ref
        self.meta = meta
        self.interval = interval
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dbgfwd-state", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def mark(self) -> None:
        self._dirty.set()

    def write_now(self) -> None:
        engine = self._engine()
        if engine is None:
            return
        payload = dict(self.meta)
        payload["ranks"] = [r.as_dict() for r in engine.snapshot()]
        payload["targets"] = [{"key": t.key, "name": t.name, "running": t.running, "status": t.status,
                               "detail": dict(t.detail)} for t in engine.targets]
        state.write_session(self.workspace, payload)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.is_set():
                break
            self._dirty.clear()
            try:
                self.write_now()
            except OSError as exc:
                log.warning("cannot write session state: %s", exc)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def run_attach(opts: AttachOptions, console: Console,
               on_ready: Callable[[Engine], None] | None = None,
               stop_event: threading.Event | None = None) -> Engine:
    """Run until SIGINT/SIGTERM/SIGHUP (or `duration`, or `stop_event`). Returns the stopped engine."""
    validate(opts, console)
    engine_box: list[Engine] = []
    meta = {"provider": None, "targets_spec": list(opts.targets), "started": time.time(),
            "launch_json": str(opts.launch_json) if opts.launch_json else None,
            "workspace": str(opts.workspace), "base_port": opts.base_port, "ranks_per_node": opts.ranks_per_node,
            "provider_options": options_record(opts)}
    writer = SessionWriter(opts.workspace, lambda: engine_box[0] if engine_box else None, meta)
    launch = LaunchWriter(opts, console)
    stop = stop_event or threading.Event()

    previous = {}

    def on_signal(signum, frame):
        stop.set()

    # SIGHUP (the terminal closed) stops like SIGTERM: forwards closed, session.json removed.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread (tests call run_attach from a thread)
            pass
    engine = make_engine(opts, on_plan_change=launch, on_state_change=writer.mark)
    engine_box.append(engine)
    meta["provider"] = engine.provider.name
    try:
        with console.status(f"discovering ranks ({engine.provider.name})..."):
            engine.start()
        writer.start()
        writer.write_now()
        if engine.targets and not engine.snapshot():
            console.warn(f"found {len(engine.targets)} target(s) but no ranks yet: waiting for rank markers "
                         "(start ranks with dbgfwd-rank, or pass --ranks-per-node N)")
        if on_ready:
            on_ready(engine)
        deadline = None if opts.duration is None else time.monotonic() + opts.duration
        while not stop.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            stop.wait(0.5 if remaining is None else min(0.5, remaining))
    finally:
        writer.stop()
        engine.stop()
        state.remove_session(opts.workspace)
        for sig, prev in previous.items():
            signal.signal(sig, prev)
    return engine
