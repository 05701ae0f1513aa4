import os
import subprocess

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
