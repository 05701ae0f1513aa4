"""Atomic writes: a process ended while a file is being written leaves the old file and no temp file."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _slow_writer(main: str) -> subprocess.Popen:
    """A Python process whose fsync says "writing" and then holds for 30 s, running `main` (dbgfwd's fsutil and
    lifecycle imported)."""
    program = textwrap.dedent(f"""
        import os, sys, threading, time
        sys.path.insert(0, {str(ROOT)!r})
        from dbgfwd import fsutil, lifecycle
        real_fsync = os.fsync
        def slow_fsync(fd):
            print("writing", flush=True)
            time.sleep(30)
            real_fsync(fd)
        os.fsync = slow_fsync
    """) + textwrap.dedent(main)
    return subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)


def test_a_signal_during_a_slow_write_leaves_no_temp_file(tmp_path):
    """The interleaving of a CI run: SIGTERM while attach's command thread was between creating
    `.ports.json.*.tmp` and renaming it; the command did not stop within the grace period, the process ended
    at once, and the temp file stayed. Here the write's fsync is held until well past the grace period."""
    target = tmp_path / "ports.json"
    target.write_text("old")
    proc = _slow_writer(f"""
        sys.exit(lifecycle.run_command(lambda: fsutil.atomic_write_text({str(target)!r}, "new") or 0))
    """)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "no temp file while writing"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 143 and took < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ports.json"] and target.read_text() == "old"


def test_a_write_in_a_thread_the_command_gave_up_on_leaves_no_temp_file(tmp_path):
    """A later CI run: attach runs engine.start() (which writes ports.json) in a thread it gives up on when a
    signal comes, so that a blocking SDK call cannot hold Ctrl-C. The command then returned in time, the
    interpreter ended with that thread between writing `.ports.json.*.tmp` and renaming it, and the temp file
    stayed. Here the abandoned thread's fsync is held until the process has ended."""
    target = tmp_path / "ports.json"
    target.write_text("old")
    proc = _slow_writer(f"""
        def body():
            threading.Thread(target=fsutil.atomic_write_text, args=({str(target)!r}, "new"), daemon=True).start()
            lifecycle.stop_event().wait()  # like attach's _start: stop waiting for it at once
            return 0
        sys.exit(lifecycle.run_command(body))
    """)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "no temp file while writing"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 143
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ports.json"] and target.read_text() == "old"


def test_nothing_new_is_written_once_the_process_is_ending(tmp_path, monkeypatch):
    from dbgfwd import fsutil

    monkeypatch.setattr(fsutil, "_ending", False)
    fsutil.atomic_write_text(tmp_path / "a", "1")
    fsutil.remove_temp_files()
    try:
        fsutil.atomic_write_text(tmp_path / "b", "2")
    except OSError as exc:
        assert "ending" in str(exc)
    else:
        raise AssertionError("a write after the end began was accepted")
    assert sorted(os.listdir(tmp_path)) == ["a"]
