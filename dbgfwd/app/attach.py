"""`dbgfwd attach` as a library: discover, plan, forward, write launch.json, report, until stopped."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from dbgfwd import lifecycle
from dbgfwd.app.options import AttachOptions, make_engine, options_record, validate
from dbgfwd.engine import Engine, RankStatus
from dbgfwd.errors import DbgfwdError
from dbgfwd.ui.console import Console
from dbgfwd.vscode.tasks import portability_warning, task_workspace, wait_command
from dbgfwd.workspace import state

log = logging.getLogger("dbgfwd.session")


class LaunchWriter:
    """Rewrites launch.json when the rank set or a local port changes (never on state changes).

    A write that fails (launch.json does not parse, is read-only or immutable, the disk is full) is said
    once, in one line, kept in `problem` for the live view and `status`, and retried every `RETRY`
    seconds until it succeeds: fixing the file is enough, no restart needed."""

    RETRY = 2.0

    def __init__(self, opts: AttachOptions, console: Console, on_problem: Callable[[], None] | None = None):
        self.opts = opts
        self.console = console
        self.path = opts.launch_json
        self.problem: str | None = None
        self._on_problem = on_problem or (lambda: None)
        self._last: tuple | None = None  # what launch.json holds (as far as dbgfwd wrote it)
        self._pending: list | None = None  # what it should hold, not yet written
        self._next_try = 0.0
        self._portability_said = False
        self._said: set[str] = set()
        self._lock = threading.Lock()
        self.job_port: int | None = None  # the job session's port, once it listens

    def __call__(self, ranks: list[RankStatus]) -> None:
        if self.path is None:
            return
        from dbgfwd.vscode import AttachEntry

        entries = [AttachEntry(rank=r.planned.rank, local_port=r.planned.local_port, node=r.target_name,
                               local_rank=r.planned.local_rank, remote_root=r.remote_root, program=r.program)
                   for r in ranks]
        with self._lock:
            if tuple(entries) == self._last and self._pending is None:
                return
            self._pending = entries
            self._write()

    def retry(self) -> None:
        with self._lock:
            if self._pending is not None and time.monotonic() >= self._next_try:
                self._write()

    def _write(self) -> None:
        from dbgfwd.errors import DbgfwdError
        from dbgfwd.fsutil import write_error
        from dbgfwd.vscode import LaunchOptions, update_launch_json

        entries = self._pending
        if entries is None or self.path is None:
            return
        if not entries and self._last is None:
            self._pending = None  # nothing planned yet: write nothing at all
            return
        try:
            result = update_launch_json(
                self.path, entries,
                LaunchOptions(local_root=self.opts.local_root, remote_root=self.opts.remote_root,
                              just_my_code=self.opts.just_my_code, wait_command=wait_command(),
                              workspace=task_workspace(self.path, self.opts.workspace), job_port=self.job_port),
                tasks_path=self.path.parent / "tasks.json")
        except (DbgfwdError, OSError) as exc:
            err = exc if isinstance(exc, DbgfwdError) else write_error(self.path, exc)
            problem = f"{self.path} NOT updated: {err.message}"
            if problem != self.problem:
                hint = f" ({err.hint}; dbgfwd retries every {self.RETRY:g}s)" if err.hint else ""
                self.console.warn(problem + hint)
                self.problem = problem
                self._on_problem()
            self._next_try = time.monotonic() + self.RETRY
            return
        self._last, self._pending = tuple(entries), None
        if self.problem is not None:
            self.problem = None
            self._on_problem()
            self.console.info(f"{self.path} is writable again: updated")
        if result.changed:
            self.console.info(f"wrote {len(entries)} attach configs to {self.path}")
            if not self._portability_said:
                self._portability_said = True
                warning = portability_warning(wait_command())
                if warning:
                    self.console.warn(warning)
        for warning in result.warnings:
            self.console.warn(warning)
        from dbgfwd.vscode.plan import binding_warnings

        for warning in binding_warnings(entries, self.opts.workspace, self.opts.local_root, self.opts.remote_root):
            if warning not in self._said:
                self._said.add(warning)
                self.console.warn(warning)


class SessionWriter:
    """Writes session.json at most every `interval` seconds, from its own thread."""

    def __init__(self, workspace: Path, engine_ref: Callable[[], Engine], meta: dict, interval: float = 0.25):
        self.workspace = workspace
        self._engine = engine_ref
        self.meta = meta
        self.interval = interval
        self.meta_source: Callable[[], dict] = dict  # values that change while attach runs
        self._written: tuple | None = None  # what the last full write was made of
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
        meta = dict(self.meta)
        meta.update(self.meta_source())
        targets = [{"key": t.key, "name": t.name, "running": t.running, "status": t.status,
                    "detail": dict(t.detail)} for t in engine.targets]
        # Unchanged since the last write (no rank changed state, no relay is moving bytes, same targets and
        # meta): the heartbeat only touches the file. Rewriting 1024 ranks every 5 s was an idle attach's CPU.
        signature = (engine.version, repr(meta), repr(targets))
        if signature == self._written and not engine.relaying() and state.touch_session(self.workspace):
            return
        payload = dict(meta, ranks=[r.as_dict() for r in engine.snapshot()], targets=targets)
        state.write_session(self.workspace, payload)
        self._written = signature

    def _loop(self) -> None:
        while not self._stop.is_set():
            # Rewritten on every change, and at least every HEARTBEAT seconds: `status` and `wait` take a
            # file that stopped being refreshed for an attach that is stopped (Ctrl-Z, a sleeping laptop).
            self._dirty.wait(state.HEARTBEAT)
            if self._stop.is_set():
                break
            self._dirty.clear()
            try:
                self.write_now()
            except DbgfwdError as exc:
                log.warning("cannot write session state: %s", exc.message)
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

    def on_launch_problem() -> None:
        if engine_box:
            engine_box[0].problems["launch.json"] = launch.problem
        writer.mark()

    launch = LaunchWriter(opts, console, on_problem=on_launch_problem)
    writer.meta_source = lambda: {"launch_json_problem": launch.problem}
    # The provider checks its options here, before anything is written to the workspace.
    engine = make_engine(opts, on_plan_change=launch, on_state_change=writer.mark)
    engine_box.append(engine)
    meta["provider"] = engine.provider.name
    try:
        lock = state.lock_workspace(opts.workspace)
    except BaseException:
        engine.stop()
        raise
    job = None
    try:
        if opts.job_session:
            job = open_job_session(opts, engine, console)
            if job is not None:
                launch.job_port = meta["job_port"] = job.port
        return _serve(opts, console, engine, writer, launch, lock, on_ready, stop_event or lifecycle.stop_event(),
                      job)
    finally:
        if job is not None:
            job.stop()
        lock.release()


def rank_config(opts: AttachOptions, status: RankStatus) -> dict:
    """A rank's attach configuration as the job session announces it: launch.json's, variables resolved."""
    from dbgfwd.app.jobsession import resolve_workspace
    from dbgfwd.vscode import AttachEntry, LaunchOptions
    from dbgfwd.vscode.generate import attach_config

    p = status.planned
    entry = AttachEntry(rank=p.rank, local_port=p.local_port, node=status.target_name, local_rank=p.local_rank,
                        remote_root=status.remote_root, program=status.program)
    config = attach_config(entry, LaunchOptions(local_root=opts.local_root, remote_root=opts.remote_root,
                                                just_my_code=opts.just_my_code))
    config.pop("presentation", None)
    config["name"] = f"rank {p.rank} ({status.target_name})"
    config["subProcessId"] = p.rank
    return resolve_workspace(config, opts.workspace)


def open_job_session(opts: AttachOptions, engine: Engine, console: Console):
    """The job session's listener (see dbgfwd.app.jobsession), on the port this workspace used last when it is
    free; None (said once) when no port can be had."""
    from dbgfwd.app.jobsession import JobSession, choose_port
    from dbgfwd.workspace.ports import PortMemory

    memory = PortMemory.of(opts.workspace)
    taken = {r.planned.local_port for r in engine.snapshot()}
    port = choose_port(memory.load_job(), engine.plan.local_base_port, taken)
    try:
        job = JobSession(engine, lambda st: rank_config(opts, st), port, auto=opts.job_ranks,
                         allowed_uids=engine.settings.allowed_uids)
    except OSError as exc:
        console.warn(f"no job session (cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}); the per-rank "
                     "configs work as before")
        return None
    try:
        memory.save_job(job.port)
    except (DbgfwdError, OSError) as exc:
        log.warning("cannot remember the job session's port: %s", exc)
    return job


def _serve(opts: AttachOptions, console: Console, engine: Engine, writer: SessionWriter, launch: LaunchWriter,
           lock: state.WorkspaceLock, on_ready: Callable[[Engine], None] | None, stop: threading.Event,
           job=None) -> Engine:
    try:
        with lifecycle.on_abort(lambda: state.remove_session(opts.workspace)):
            with console.status(f"discovering ranks ({engine.provider.name})..."):
                if not _start(engine, stop):
                    return engine
            for note in engine.notes:
                console.warn(note)
            if job is not None:
                job.start()
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
                stop.wait(1.0 if remaining is None else min(1.0, remaining))
                launch.retry()
                if lock.restore():  # .dbgfwd/ was removed under us: put the lock and the state back now
                    writer.mark()
    finally:
        writer.stop()
        engine.stop()
        state.remove_session(opts.workspace)
    return engine


def _start(engine: Engine, stop: threading.Event) -> bool:
    """`engine.start()` (discovery, first connections), given up when a stop is requested meanwhile: SDK
    calls to a silent server can block for a minute. False when stopped before it finished."""
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            engine.start()
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="dbgfwd-start", daemon=True).start()
    while not done.wait(0.05):
        if stop.is_set():
            return False
    if failure:
        raise failure[0]
    return True
