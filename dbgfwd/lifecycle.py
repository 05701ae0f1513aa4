"""How a dbgfwd process stops: Ctrl-C (and SIGTERM/SIGHUP) at any moment, within about a second.

The CLI runs each command on a worker thread and keeps the main thread for signals (`run_command`). A
signal sets `stop_requested()`: long-running work (attach's loop, `wait`'s polling, the demo) watches it and
winds down on its own. Work that cannot be interrupted (a blocking SDK call, a TCP connect to a silent
host, getaddrinfo) is abandoned: after `GRACE` seconds the main thread runs the registered emergency
cleanups (remove the session file, kill child process groups), bounded, and ends the process with the
signal's exit code. A second Ctrl-C skips the grace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Callable, Iterator

from dbgfwd.errors import ExitCode

log = logging.getLogger("dbgfwd")

GRACE = 0.7  # seconds a command gets to stop on its own after the signal
CLEANUP_BOUND = 0.3  # seconds the emergency cleanups may take together
IDLE_JOIN = 0.5  # seconds the main thread waits on the command between checks while no stop was asked for

_stop = threading.Event()
_signal: list[int] = []  # the first signal received
_lock = threading.Lock()
_cleanups: dict[int, Callable[[], None]] = {}
_next_id = [0]

EXIT_FOR_SIGNAL = {signal.SIGINT: ExitCode.INTERRUPTED, signal.SIGTERM: ExitCode.TERMINATED}
if hasattr(signal, "SIGHUP"):
    EXIT_FOR_SIGNAL[signal.SIGHUP] = ExitCode.HANGUP


def stop_requested() -> bool:
    return _stop.is_set()


def stop_event() -> threading.Event:
    """Set once the process is asked to stop (a signal, or `request_stop`)."""
    return _stop


def wait(seconds: float) -> bool:
    """Sleep up to `seconds`; True (early) when a stop was requested."""
    return _stop.wait(seconds)


def exit_code() -> ExitCode | None:
    """The exit code the received signal calls for (None: no signal)."""
    return EXIT_FOR_SIGNAL.get(_signal[0], ExitCode.INTERRUPTED) if _signal else None


def request_stop(signum: int = signal.SIGINT) -> None:
    with _lock:
        if not _signal:
            _signal.append(signum)
    _stop.set()


def reset() -> None:
    """Forget a previous stop (tests run several commands in one process)."""
    with _lock:
        _signal.clear()
        _cleanups.clear()
    _stop.clear()


@contextlib.contextmanager
def on_abort(cleanup: Callable[[], None]) -> Iterator[None]:
    """Run `cleanup` if the process is ended before this block leaves (work abandoned after Ctrl-C).
    It must be quick and must not block: it runs on the main thread with a bound on the total time."""
    with _lock:
        _next_id[0] += 1
        key = _next_id[0]
        _cleanups[key] = cleanup
    try:
        yield
    finally:
        with _lock:
            _cleanups.pop(key, None)


def track_child(proc) -> Callable[[], None]:
    """Kill child `proc` (started with start_new_session=True: its whole group) if the process is ended
    before the returned `untrack()` is called. Children in their own session miss the terminal's Ctrl-C."""
    def kill() -> None:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)

    with _lock:
        _next_id[0] += 1
        key = _next_id[0]
        _cleanups[key] = kill

    def untrack() -> None:
        with _lock:
            _cleanups.pop(key, None)
    return untrack


def _run_cleanups() -> None:
    with _lock:
        pending = list(reversed(_cleanups.values()))
        _cleanups.clear()

    def run() -> None:
        for fn in pending:
            try:
                fn()
            except Exception:  # an emergency path: never let one cleanup stop the others
                log.debug("cleanup failed", exc_info=True)

    t = threading.Thread(target=run, name="dbgfwd-abort", daemon=True)
    t.start()
    t.join(CLEANUP_BOUND)


def _restore_terminal() -> None:
    """A spinner or live table abandoned mid-frame leaves the cursor hidden: show it again."""
    with contextlib.suppress(Exception):
        if sys.stderr.isatty():
            sys.stderr.write("\x1b[?25h\n")
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(Exception):
        sys.stderr.flush()


def run_command(body: Callable[[], int]) -> int:
    """Run `body` (which returns an exit code) on a worker thread; the main thread serves signals.

    Returns `body`'s code, or the signal's when a signal arrived. When `body` has not finished `GRACE`
    seconds after the signal, the emergency cleanups run and the process ends here (os._exit)."""
    if threading.current_thread() is not threading.main_thread():
        return body()  # an embedding caller (a test thread): no signals to serve
    result: list[int] = []

    def work() -> None:
        try:
            result.append(body())
        except SystemExit as exc:  # shell completion and click's own exits end this way
            result.append(exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1)
        except BaseException:  # body maps every exception to a code; this is the last resort
            log.debug("command failed", exc_info=True)
            result.append(int(ExitCode.ERROR))

    signalled_at: list[float] = []

    def on_signal(signum, frame) -> None:
        first = not _stop.is_set()
        if first:
            signalled_at.append(time.monotonic())
        request_stop(signum)
        if not first and signum == signal.SIGINT:
            _abandon()

    previous = {}
    for sig in EXIT_FOR_SIGNAL:
        with contextlib.suppress(ValueError, OSError):
            previous[sig] = signal.signal(sig, on_signal)
    worker = threading.Thread(target=work, name="dbgfwd-command", daemon=True)
    try:
        worker.start()
        deadline = None
        while worker.is_alive():
            # The wait is cut short by the worker's end, and a signal's handler runs during it (POSIX lock waits
            # are interruptible): a long wait while nothing happens keeps an idle attach from waking 20 times a
            # second, and the grace period still counts from the signal.
            worker.join(0.05 if _stop.is_set() else IDLE_JOIN)
            if _stop.is_set():
                deadline = deadline or (signalled_at[0] if signalled_at else time.monotonic()) + GRACE
                if time.monotonic() >= deadline and worker.is_alive():
                    _abandon()
    finally:
        for sig, prev in previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, prev)
        # The process ends now. A thread the command gave up on (attach's start-up, stopped while it wrote
        # ports.json) dies with the interpreter wherever it is: its temp file must not stay behind.
        fsutil = sys.modules.get("dbgfwd.fsutil")  # not imported: nothing was written (and --help stays fast)
        if fsutil is not None:
            fsutil.remove_temp_files()
    code = result[0] if result else int(ExitCode.ERROR)
    signalled = exit_code()
    return int(signalled) if signalled is not None else code


def _abandon() -> None:
    """End the process now: the command did not stop in time (or Ctrl-C was pressed twice)."""
    from dbgfwd.fsutil import remove_temp_files

    remove_temp_files()  # a file being written atomically stays as it was, with no temp file beside it
    _run_cleanups()
    _restore_terminal()
    os._exit(int(exit_code() or ExitCode.INTERRUPTED))
