import os
import subprocess

import pytest

from dbgfwd.rank import markers


def test_marker_round_trip_and_dead_pids_ignored(tmp_path):
    m = markers.new_marker(3, 1, 5679, "127.0.0.1", 4, "torchrun", ["train.py"])
    path = markers.write_marker(m, tmp_path)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert markers.read_markers(tmp_path) == [m]
    dead = markers.Marker(rank=9, local_rank=0, port=1, pid=2 ** 22 + 12345)
    markers.write_marker(dead, tmp_path)
    assert [x.rank for x in markers.read_markers(tmp_path)] == [3]
    (tmp_path / "rank-1.json").write_text("{not json")
    assert [x.rank for x in markers.read_markers(tmp_path)] == [3]


def test_probe_command_through_a_real_shell(tmp_path):
    m = markers.new_marker(2, 0, 5678, "127.0.0.1", None, "slurm", ["x.py"])
    markers.write_marker(m, tmp_path)
    markers.write_marker(markers.Marker(rank=7, local_rank=0, port=1, pid=2 ** 22 + 999), tmp_path)
    out = subprocess.run(["sh", "-c", markers.probe_command()], capture_output=True, text=True,
                         env=dict(os.environ, DBGFWD_RUNTIME_DIR=str(tmp_path)), check=True).stdout
    result = markers.parse_probe_output(out)
    assert [x.rank for x in result.markers] == [2]
    assert result.tcp_known


def test_proc_net_tcp_parsing():
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:162E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n"
        "   1: 0100007F:162F 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n"
        "   2: 00000000000000000000000001000000:1630 00000000000000000000000000000000:0000 0A 0 0 0 0 0 3 1\n"
    )
    assert markers.parse_proc_net_tcp(text) == {("127.0.0.1", 5678), ("::1", 5680)}
    result = markers.parse_probe_output("--dbgfwd-tcp--\n" + text + "--dbgfwd-end--\n")
    assert result.port_ready(5678) and not result.port_ready(5679) and result.port_ready(5680)


def test_a_zombie_is_not_alive():
    """Killed and not yet reaped: its /proc entry stays, but it will never run again (nor its debugpy)."""
    import signal
    import time

    proc = subprocess.Popen(["sleep", "60"])
    try:
        assert markers.pid_alive(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while b") Z " not in open(f"/proc/{proc.pid}/stat", "rb").read() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert os.path.exists(f"/proc/{proc.pid}") and not markers.pid_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert not markers.pid_alive(proc.pid)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd here (Linux 5.3+ and Python 3.9+): /proc is read "
                    "on every check instead")
def test_a_process_seen_running_is_then_watched_without_reading_proc(monkeypatch):
    """An idle attach of 1024 local ranks checks every rank every few seconds: once seen running, a process is
    watched through its pidfd, and its end (here a kill, reaped) is still seen at the next check."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        assert markers.pid_alive(proc.pid)
        reads = []
        real_open = open
        monkeypatch.setattr("builtins.open", lambda f, *a, **k: reads.append(f) or real_open(f, *a, **k))
        assert markers.pid_alive(proc.pid) and markers.pid_alive(proc.pid)
        assert not [f for f in reads if str(f).startswith(f"/proc/{proc.pid}/")]
    finally:
        proc.kill()
        proc.wait()
    assert not markers.pid_alive(proc.pid)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd here (Linux 5.3+ and Python 3.9+)")
def test_the_watch_of_a_process_never_asked_about_again_ends_when_another_is_watched():
    """A restarted rank's old pid is never asked about again (its marker is gone): its pidfd must not stay open
    for the rest of the session. Watching the new process closes the watches of the ended ones."""
    from dbgfwd import platform

    old = subprocess.Popen(["sleep", "60"])
    assert markers.pid_alive(old.pid) and old.pid in platform._PIDFDS
    old.kill()
    old.wait()
    new = subprocess.Popen(["sleep", "60"])
    try:
        assert markers.pid_alive(new.pid)
        assert old.pid not in platform._PIDFDS and new.pid in platform._PIDFDS
    finally:
        new.kill()
        new.wait()


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd here (Linux 5.3+ and Python 3.9+)")
def test_watching_many_new_processes_registers_each_once(monkeypatch):
    """The first look at 1024 ranks watches 1024 new processes, each after a sweep for ended ones. A sweep that
    built its poll object anew registered every watched pidfd again: quadratic (~0.3 s at 1024). The watched
    set is kept in one poll object; the ended ones are still closed at the next watch."""
    import select

    from dbgfwd import platform

    monkeypatch.setattr(platform, "_PIDFDS", {})
    monkeypatch.setattr(platform, "_PIDS", {})
    monkeypatch.setattr(platform, "_watched", None)
    registered = []
    real_poll = select.poll

    class CountingPoll:
        def __init__(self):
            self._poll = real_poll()

        def register(self, fd, mask):
            registered.append(fd)
            self._poll.register(fd, mask)

        def __getattr__(self, name):
            return getattr(self._poll, name)

    monkeypatch.setattr(select, "poll", CountingPoll)
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(200)]
    try:
        for p in procs[:100]:
            assert markers.pid_alive(p.pid)
        for p in procs[:100]:
            p.kill()
            p.wait()
        for p in procs[100:]:
            assert markers.pid_alive(p.pid)
        assert len(registered) == 200, len(registered)  # once each: not once per watched process per sweep
        assert set(platform._PIDFDS) == {p.pid for p in procs[100:]}  # the ended ones went at the next watch
    finally:
        for p in procs:
            p.kill()
            p.wait()
        with platform._pidfd_lock:
            for fd in list(platform._PIDS):
                platform._drop(fd)


def test_outside_linux_a_marker_s_process_is_looked_up_without_proc(monkeypatch):
    """macOS has no /proc: a live rank must still count as alive there (before, every marker was dead)."""
    from dbgfwd import platform

    monkeypatch.setattr(platform, "LINUX", False)
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(FileNotFoundError(a[0])))
    proc = subprocess.Popen(["sleep", "60"])
    try:
        assert markers.pid_alive(proc.pid) and markers.pid_alive(os.getpid())
    finally:
        proc.kill()
        proc.wait()
    assert not markers.pid_alive(proc.pid)


def test_an_unchanged_marker_folder_is_not_read_again(tmp_path, monkeypatch):
    """Markers change only by rename, which changes the folder: while the folder stays as it was, the markers
    parsed last time are reused (their processes' liveness is still checked every time)."""
    monkeypatch.setattr(markers, "_QUIET_SECONDS", 0.0)
    a = markers.new_marker(0, 0, 5678, "127.0.0.1", 2, "torchrun", ["t.py"])
    path = markers.write_marker(a, tmp_path)
    assert markers.read_markers(tmp_path) == [a]
    # An in-place edit (dbgfwd never makes one) leaves the folder as it was: the cached marker is used.
    path.write_text(path.read_text().replace('"port": 5678', '"port": 5999'))
    assert markers.read_markers(tmp_path) == [a]
    b = markers.Marker(rank=1, local_rank=1, port=5679, pid=os.getppid())  # a live process of another pid
    markers.write_marker(b, tmp_path)  # a rename: the folder changed, everything is read again
    assert [(m.rank, m.port) for m in markers.read_markers(tmp_path)] == [(0, 5999), (1, 5679)]
    dead = markers.Marker(rank=2, local_rank=0, port=1, pid=2 ** 22 + 4321)
    markers.write_marker(dead, tmp_path)
    assert [m.rank for m in markers.read_markers(tmp_path)] == [0, 1]
    assert [m.rank for m in markers.read_markers(tmp_path, include_dead=True)] == [0, 1, 2]


def test_a_folder_that_just_changed_is_read_every_time(tmp_path, monkeypatch):
    """A change within the timestamps' granularity of the last read could leave the folder's times unchanged:
    until the folder has been quiet for a while, nothing is reused."""
    monkeypatch.setattr(markers, "_QUIET_SECONDS", 3600.0)
    a = markers.new_marker(0, 0, 5678, "127.0.0.1", 1, "torchrun", ["t.py"])
    path = markers.write_marker(a, tmp_path)
    assert markers.read_markers(tmp_path) == [a]
    path.write_text(path.read_text().replace('"port": 5678', '"port": 5999'))
    assert [m.port for m in markers.read_markers(tmp_path)] == [5999]
