import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """Every test gets its own workspace and marker dir, plain output, and no stray config."""
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("DBGFWD_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("DBGFWD_WORKSPACE", raising=False)
    monkeypatch.delenv("DBGFWD_PROVIDER", raising=False)
    monkeypatch.delenv("DBGFWD_BASE_PORT", raising=False)
    # dbgfwd installed and on PATH, as users have it (the wait task then runs plain `dbgfwd`)
    monkeypatch.setenv("PATH", os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    yield


def free_port_block(count: int, start: int = 20000) -> int:
    """A base port whose `count` ports are free now (bind check only). The 64 ports above the base are free too:
    the local provider takes a debugpy listener there for a rank when a job has no markers yet, and a debugpy left
    by an earlier test must not sit in a new test's range."""
    from dbgfwd.plan.ports import port_is_free
    from dbgfwd.providers.local.provider import PORT_SPAN

    span_checked = max(count, PORT_SPAN)
    # Parallel workers (pytest-xdist) look in disjoint ranges, below the kernel's ephemeral ports (32768+);
    # attach's default local ports (base + 1000) stay in the worker's range too.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        span = 12000 // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
        low = 20000 + int(worker[2:]) * span
        # `start` keeps its place, scaled into the worker's range (20000 -> its start, 40000 -> its middle)
        base = low + max(0, start - 20000) * span // 40000 + (os.getpid() % 10) * 50
        limit = low + span - 1000
    else:
        base = start + (os.getpid() % 200) * 50
        limit = 60000
    while base + span_checked < limit:
        if all(port_is_free(base + i) for i in range(span_checked)):
            return base
        base += count + 7
    raise RuntimeError("no free port block")


@pytest.fixture
def port_block():
    return free_port_block


# Three full runs on 2026-11-30 (one with every test passing) ended with SIGABRT after pytest had printed its
# summary: exit 134, no message, during the interpreter's shutdown with the daemon threads the tests leave behind
# (paramiko transports, relays, fake servers). The cause is not found yet: to look for it, run the suite with
# DBGFWD_TEST_PLAIN_EXIT=1 PYTHONFAULTHANDLER=1, which names the thread. The verdict is pytest's own exit status: once
# every report is written, the process ends with it instead of going through that shutdown.
_exit_status: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if _exit_status and os.environ.get("DBGFWD_TEST_PLAIN_EXIT") is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])
