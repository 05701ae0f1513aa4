"""`dbgfwd attach` as a library: discover, plan, forward, write launch.json, report, until stopped."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from dbgfwd import providers, state
from dbgfwd.console import Console
from dbgfwd.engine import Engine, EngineSettings, PlanSettings, RankStatus
from dbgfwd.errors import UsageError
from dbgfwd.planner import PortMemory
from dbgfwd.providers.base import Capability, ProviderConfig

log = logging.getLogger("dbgfwd.session")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class AttachOptions:
    workspace: Path
    provider: str | None = None
    targets: tuple[str, ...] = ()
    provider_options: Mapping[str, Any] = field(default_factory=dict)
    base_port: int = 5678
    local_base_port: int | None = None
    ranks_per_node: int | None = None
    only: frozenset[int] | None = None
    expected_ranks: int | None = None
    launch_json: Path | None = None  # None: do not write launch.json
    local_root: str = "${workspaceFolder}"
    remote_root: str | None = None
    just_my_code: bool = False
    bind_host: str = "127.0.0.1"
    client_wait: float = 60.0
    duration: float | None = None  # stop by itself after this many seconds
    verbose: int = 0


def provider_config(opts: AttachOptions) -> ProviderConfig:
    return ProviderConfig(targets=opts.targets, options=dict(opts.provider_options), base_port=opts.base_port,
                          ranks_per_node=opts.ranks_per_node, verbose=opts.verbose)


def make_engine(opts: AttachOptions, on_plan_change=None, on_state_change=None) -> Engine:
    config = provider_config(opts)
    cls = providers.choose(opts.provider, config)
    provider = cls(config)
    shares = Capability.SHARES_LOCAL_PORTS in cls.capabilities
    ranks_per_node = opts.ranks_per_node
    if (ranks_per_node is None and opts.expected_ranks is None
            and Capability.OUT_OF_BAND_READINESS not in cls.capabilities):
        # No markers can be read through this provider, so nothing would ever say how many ranks a
        # node runs: plan one and say so, rather than planning nothing in silence.
        ranks_per_node = 1
        log.warning("the %s provider cannot read rank markers: assuming 1 rank per node "
                    "(pass --ranks-per-node N for more)", cls.name)
    local_base = opts.local_base_port
    if local_base is None:
        local_base = opts.base_port + 1000 if shares else opts.base_port
    plan = PlanSettings(base_port=opts.base_port, local_base_port=local_base,
                        strict_local_ports=opts.local_base_port is not None, ranks_per_node=ranks_per_node,
                        only=opts.only, expected_ranks=opts.expected_ranks)
    settings = EngineSettings(bind_host=opts.bind_host, client_wait=opts.client_wait)
    memory = PortMemory(state.ports_path(opts.workspace))
    return Engine(provider, plan, settings, memory, on_plan_change=on_plan_change,
                  on_state_change=on_state_change)


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

        # An explicit --remote-root wins over what the provider inferred for each rank.
        inferred = self.opts.remote_root is None
        entries = [AttachEntry(rank=r.planned.rank, local_port=r.planned.local_port, node=r.target_name,
                               local_rank=r.planned.local_rank, remote_root=r.remote_root if inferred else None)
                   for r in ranks]
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


def wait_command() -> str:
    """How a VS Code task should run dbgfwd: `dbgfwd` when that is this installation, else this Python."""
    import shlex
    import shutil
    import sys

    found = shutil.which("dbgfwd")
    # Compare the folders as named, not resolved: a venv's python is a symlink to the base interpreter.
    if found and Path(os.path.abspath(found)).parent == Path(os.path.abspath(sys.executable)).parent:
        return "dbgfwd"
    return f"{shlex.quote(sys.executable)} -m dbgfwd"


def task_workspace(launch_json: Path, workspace: Path) -> str | None:
    """The workspace to hand the wait task when VS Code's folder (launch.json's) is not the workspace."""
    if Path(launch_json).resolve().parent.parent == Path(workspace).resolve():
        return None
    return str(Path(workspace).resolve())


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


def validate(opts: AttachOptions, console: Console) -> None:
    if opts.bind_host not in LOOPBACK:
        console.warn(f"forwards will listen on {opts.bind_host}: anyone who reaches it can run code in your "
                     "ranks (debugpy has no authentication)")
    if opts.expected_ranks is not None and opts.expected_ranks < 1:
        raise UsageError("--ranks must be at least 1")


def run_attach(opts: AttachOptions, console: Console,
               on_ready: Callable[[Engine], None] | None = None,
               stop_event: threading.Event | None = None) -> Engine:
    """Run until SIGINT/SIGTERM (or `duration`, or `stop_event`). Returns the stopped engine."""
    validate(opts, console)
    engine_box: list[Engine] = []
    meta = {"provider": None, "targets_spec": list(opts.targets), "started": time.time(),
            "launch_json": str(opts.launch_json) if opts.launch_json else None,
            "workspace": str(opts.workspace), "base_port": opts.base_port}
    writer = SessionWriter(opts.workspace, lambda: engine_box[0] if engine_box else None, meta)
    launch = LaunchWriter(opts, console)
    stop = stop_event or threading.Event()

    previous = {}

    def on_signal(signum, frame):
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
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
