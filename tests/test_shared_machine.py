"""Another local user is an adversary: each attack run with a real second uid (created here; CI is root).

The attacker's processes run as that user through `runuser` and Debian's own python3 (the test venv lives
in /root, which the other user cannot read); they use only the standard library.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dbgfwd.rank import markers
from dbgfwd.ui.console import clean
from dbgfwd.ui.tables import rank_table
from tests.support import cli, require
from tests.support.echo_server import EchoServer
from tests.support.procinfo import kill_group

OTHER = "dbgfwd-other"
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def other():
    """(uid, gid) of a second local user, created once."""
    reason = None
    if os.geteuid() != 0:
        reason = "needs root to create a second user"
    elif not shutil.which("runuser") or not os.path.exists(SYSTEM_PYTHON):
        reason = "needs runuser and /usr/bin/python3"
    if reason:
        require.missing(reason)
    try:
        entry = pwd.getpwnam(OTHER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER], check=True)
        entry = pwd.getpwnam(OTHER)
    return entry.pw_uid, entry.pw_gid


def as_other(code: str, *args: str) -> subprocess.Popen:
    """Run Python `code` as the other user (stdout piped)."""
    return subprocess.Popen(["runuser", "-u", OTHER, "--", SYSTEM_PYTHON, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd="/", start_new_session=True)




SQUATTER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept(); print("accepted", flush=True); c.sendall(b"runInTerminal"); c.close()
"""

CLIENT = """
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
c.sendall(b"Eping")  # E: the echo rank's echo service
try:
    data = c.recv(100)
except ConnectionResetError:  # closed with our bytes unread
    data = b""
print("got", data)
"""


def _squat(port: int) -> subprocess.Popen:
    p = as_other(SQUATTER, str(port))
    assert p.stdout.readline().strip() == "ready", p.stderr.read()
    return p


def _planted_dir(path: Path, uid: int, gid: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, 0o777)


# ---- critical: another user decides where VS Code connects ----

def test_a_runtime_dir_another_user_made_is_refused_by_attach_and_by_the_launcher(other, tmp_path, port_block):
    uid, gid = other
    run = tmp_path / "run"
    _planted_dir(run, uid, gid)
    port = port_block(1)
    squatter = _squat(port)
    try:
        marker = markers.Marker(rank=0, local_rank=0, port=port, pid=squatter.pid)
        path = run / f"rank-{squatter.pid}.json"
        path.write_text(marker.to_json())
        os.chown(path, uid, gid)
        res = cli.run("attach", "--provider", "local", "--runtime-dir", str(run), "--base-port", str(port),
                      "--workspace", str(tmp_path), "--duration", "1")
        assert res.returncode == 5, res.stderr
        assert f"belongs to uid {uid}" in res.stderr and len(res.stderr.strip().splitlines()) == 1
        assert not (tmp_path / ".vscode" / "launch.json").exists()

        prog = tmp_path / "p.py"
        prog.write_text("print('ran')\n")
        rank = subprocess.run([sys.executable, "-m", "dbgfwd.rank", "--base-port", str(port_block(1)), "--", str(prog)],
                              capture_output=True, text=True, env=dict(os.environ, DBGFWD_RUNTIME_DIR=str(run),
                                                                        RANK="0", LOCAL_RANK="0"), timeout=60)
        assert rank.returncode == 5 and "ran" not in rank.stdout
        assert rank.stderr.strip().splitlines()[-1].startswith("dbgfwd-rank: error: runtime directory")
        assert "Traceback" not in rank.stderr
    finally:
        kill_group(squatter)


def test_markers_are_trusted_only_as_the_users_own_regular_small_files(other, tmp_path):
    uid, gid = other
    run = markers.ensure_runtime_dir(tmp_path / "run")
    mine = markers.Marker(rank=0, local_rank=0, port=7000, pid=os.getpid())
    markers.write_marker(mine, run)
    theirs = run / "rank-1.json"  # e.g. planted while the folder was world-writable
    theirs.write_text(markers.Marker(rank=1, local_rank=1, port=7001, pid=os.getpid()).to_json())
    os.chown(theirs, uid, gid)
    os.mkfifo(run / "rank-2.json")  # would block a plain open() forever
    (run / "rank-3.json").symlink_to("/dev/zero")  # would exhaust memory
    (run / "rank-4.json").write_bytes(b"\xff\xfe not utf-8")
    (run / "rank-5.json").write_text("[" * 100000 + "]" * 100000)  # nesting past the parser's depth
    (run / "rank-6.json").write_text(" " * (markers.MARKER_MAX_BYTES + 1))
    t = time.monotonic()
    assert markers.read_markers(run) == [mine]
    assert time.monotonic() - t < 5


def test_remote_probes_read_only_the_connecting_users_markers(other, tmp_path):
    """The probe script run as root (the ranks' user here) next to another user's /tmp/dbgfwd-<uid> marker."""
    uid, gid = other
    mine = markers.ensure_runtime_dir(tmp_path / "mine")
    markers.write_marker(markers.Marker(rank=0, local_rank=0, port=5678, pid=os.getpid()), mine)
    foreign = Path(f"/tmp/dbgfwd-{uid}")
    foreign.mkdir(exist_ok=True)
    os.chown(foreign, uid, gid)
    planted = foreign / f"rank-{os.getpid()}.json"  # a live pid, their file: the attack that worked before
    planted.write_text(markers.Marker(rank=0, local_rank=0, port=6666, pid=os.getpid()).to_json())
    os.chown(planted, uid, gid)
    odd = mine / "rank-1;id.json"  # not a numeric pid
    odd.write_text(markers.Marker(rank=9, local_rank=0, port=7777, pid=os.getpid()).to_json())
    try:
        out = subprocess.run(["sh", "-c", markers.probe_command()], capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, DBGFWD_RUNTIME_DIR=str(mine))).stdout
        probed = markers.parse_probe_output(out)
        assert [(m.rank, m.port) for m in probed.markers] == [(0, 5678)]
        assert probed.uid == os.getuid() and probed.tcp_known
    finally:
        shutil.rmtree(foreign, ignore_errors=True)


def test_a_port_another_user_listens_on_is_not_a_ready_rank_and_is_never_connected(other, tmp_path, port_block):
    """The rank died; another user bound its port. The probe sees whose listener it is."""
    port = port_block(1)
    run = markers.ensure_runtime_dir(tmp_path / "run")
    markers.write_marker(markers.Marker(rank=0, local_rank=0, port=port, pid=os.getpid()), run)
    squatter = _squat(port)
    ws = tmp_path / "ws"
    ws.mkdir()
    bg = cli.Background("attach", "--provider", "local", "--runtime-dir", str(run), "--base-port", str(port),
                        "--local-base-port", str(port_block(1, start=30000)), "--workspace", str(ws),
                        "--client-wait", "3", log=tmp_path / "attach.log")
    try:
        probed = markers.local_probe(run)
        assert not probed.port_ready(port) and probed.foreign_listener(port) == other[0]
        rank = cli.wait_for(lambda: (ws / ".dbgfwd" / "session.json").exists() and cli.session(ws)["ranks"], 30,
                            "session")[0]
        assert rank["state"] == "waiting"
        with socket.create_connection(("127.0.0.1", rank["local_port"]), timeout=10) as c:
            c.sendall(b"initialize")
            c.settimeout(10)
            try:  # held, then closed (reset: its bytes were never read): never handed to the squatter
                assert c.recv(100) == b""
            except ConnectionResetError:
                pass
        assert f"held by uid {other[0]}" in json.dumps(cli.session(ws))
    finally:
        assert bg.stop() == 130, bg.output()
        kill_group(squatter)
        accepted = squatter.stdout.read()
    assert "accepted" not in accepted


# ---- high: other users reach the user's ranks through the forwards ----

def test_only_the_users_own_processes_can_use_a_forward(other, tmp_path, port_block):
    run = tmp_path / "run"
    accepts = tmp_path / "accepts"
    rank = EchoServer.start(port=port_block(1), rank=0, marker_dir=run, accept_log=accepts)
    ws = tmp_path / "ws"
    ws.mkdir()
    local = port_block(1, start=30000)

    def attach(*extra):
        return cli.Background("attach", "--provider", "local", "--runtime-dir", str(run), "--base-port",
                              str(rank.port), "--local-base-port", str(local), "--workspace", str(ws), *extra,
                              log=tmp_path / "attach.log")

    bg = attach()
    try:
        cli.wait_ready(ws, bg=bg)
        intruder = as_other(CLIENT, str(local))
        out, err = intruder.communicate(timeout=30)
        assert "got b''" in out, (out, err)
        assert not accepts.exists() or accepts.read_text() == ""  # the rank never saw it
        with socket.create_connection(("127.0.0.1", local), timeout=10) as c:  # we still can
            c.sendall(b"Eping")
            assert c.recv(4) == b"ping"
        assert f"uid {other[0]}" in bg.output()
    finally:
        assert bg.stop() == 130, bg.output()
    bg = attach("--allow-user", OTHER)
    try:
        cli.wait_ready(ws, bg=bg)
        out, _ = as_other(CLIENT, str(local)).communicate(timeout=30)
        assert "got b'ping'" in out
    finally:
        bg.stop()
        rank.stop()


def test_a_connection_flood_is_capped_and_the_users_debugger_still_gets_through(tmp_path, port_block):
    run = tmp_path / "run"
    rank = EchoServer.start(port=port_block(1), rank=0, marker_dir=run)
    ws = tmp_path / "ws"
    ws.mkdir()
    local = port_block(1, start=30000)
    bg = cli.Background("attach", "--provider", "local", "--runtime-dir", str(run), "--base-port", str(rank.port),
                        "--local-base-port", str(local), "--workspace", str(ws), log=tmp_path / "attach.log")
    flood = []
    try:
        cli.wait_ready(ws, bg=bg)
        before = _threads(bg.proc.pid)
        for _ in range(200):
            flood.append(socket.create_connection(("127.0.0.1", local), timeout=10))
        served = 0
        for s in flood:  # the first 16 are relayed to the echo rank, the rest are closed at once
            s.settimeout(10)
            s.sendall(b"Ex")
            try:
                served += s.recv(1) == b"x"
            except OSError:
                pass
        assert served == 16
        assert _threads(bg.proc.pid) <= before + 2 * 16 + 4  # two pumps per relayed client, no more
        for s in flood:
            s.close()
        flood.clear()
        cli.wait_for(lambda: cli.session(ws)["ranks"][0]["clients"] == 0, 30, "flood gone")
        with socket.create_connection(("127.0.0.1", local), timeout=10) as c:
            c.sendall(b"Eping")
            assert c.recv(4) == b"ping"
        assert "too many connections" in bg.output()
    finally:
        for s in flood:
            s.close()
        assert bg.stop() == 130, bg.output()
        rank.stop()


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


# ---- medium ----

def test_sighup_stops_attach_cleanly(tmp_path, port_block):
    run = tmp_path / "run"
    rank = EchoServer.start(port=port_block(1), rank=0, marker_dir=run)
    ws = tmp_path / "ws"
    ws.mkdir()
    bg = cli.Background("attach", "--provider", "local", "--runtime-dir", str(run), "--base-port", str(rank.port),
                        "--local-base-port", str(port_block(1, start=30000)), "--workspace", str(ws),
                        log=tmp_path / "attach.log")
    try:
        cli.wait_ready(ws, bg=bg)
        assert bg.stop(signal.SIGHUP) == 129, bg.output()
        assert not (ws / ".dbgfwd" / "session.json").exists()
    finally:
        rank.stop()


def test_a_session_whose_pid_now_belongs_to_someone_else_is_not_running(other, tmp_path):
    squatter = as_other("import time; print('up', flush=True); time.sleep(60)")
    try:
        assert squatter.stdout.readline().strip() == "up"
        from dbgfwd.workspace import state

        lock = state.lock_workspace(tmp_path)  # this process plays the attach
        state.write_session(tmp_path, {"ranks": []})
        data = json.loads(state.session_path(tmp_path).read_text())
        assert state.read_session(tmp_path).alive  # this very process wrote it and holds the lock: alive
        for pid, extra in ((squatter.pid, {}),  # another user's process that got the pid
                           (os.getpid(), {"pid_start": data["pid_start"] + 1})):  # our pid, a later process
            state.session_path(tmp_path).write_text(json.dumps({**data, "pid": pid, **extra}))
            assert not state.read_session(tmp_path).alive
            res = cli.run("wait", "--workspace", str(tmp_path), "--timeout", "1")
            assert res.returncode == 10, res.stderr
        lock.release()
    finally:
        kill_group(squatter)


HOSTILE = "pod\x1b]0;owned\x07-0\x1b[2J [link=https://evil.example]click[/link] [fe80::1] [/]"


def test_hostile_text_is_shown_not_obeyed(tmp_path):
    from rich.console import Console

    out = Console(record=True, width=400, force_terminal=True, color_system=None)
    out.print(rank_table([{"rank": 0, "target_name": HOSTILE, "local_port": 1, "state": "waiting",
                           "reason": "error from server: \x1b[31mred\x1b[0m [/]"}], title=HOSTILE))
    text = out.export_text()
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b]0;owned\\x07" in text and "[link=https://evil.example]click[/link]" in text
    assert "[fe80::1]" in text and "[/]" in text
    assert clean("a\x1b[2Jb\x9bc\nd\te") == "a\\x1b[2Jb\\x9bc\nd\te"

    from dbgfwd.workspace import state

    lock = state.lock_workspace(tmp_path)  # this process plays the attach: it holds the workspace
    state.write_session(tmp_path, {"provider": "[bold]x[/]", "ranks": [
        {"rank": 0, "local_port": 1, "local_rank": 0, "state": "ready", "target_name": HOSTILE, "reason": HOSTILE}]})
    res = cli.run("status", "--workspace", str(tmp_path), env={"COLUMNS": "400"})
    assert res.returncode == 0, res.stderr  # this process wrote it, so it is alive
    assert "\x1b" not in res.stdout and "[fe80::1]" in res.stdout and "[link=" in res.stdout
    lock.release()


# ---- a hostile workspace ----

def test_a_symlinked_state_folder_is_refused_and_nothing_is_chmodded_through_it(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".dbgfwd").symlink_to(elsewhere)
    res = cli.run("ranks", "4", "--save", "--workspace", str(ws))
    assert res.returncode == 5 and "link" in res.stderr
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755 and not list(elsewhere.iterdir())


def test_a_symlinked_launch_json_never_creates_folders_outside(tmp_path):
    ws = tmp_path / "ws"
    (ws / ".vscode").mkdir(parents=True)
    target = tmp_path / "outside" / "deep" / "launch.json"
    (ws / ".vscode" / "launch.json").symlink_to(target)
    res = cli.run("gen-launch", "--ranks", "2", "--workspace", str(ws))
    assert res.returncode == 5 and "does not exist" in res.stderr
    assert not (tmp_path / "outside").exists() and not (ws / ".vscode" / "tasks.json").exists()
    target.parent.mkdir(parents=True)  # a link to a real file is written through, tasks.json stays beside it
    res = cli.run("gen-launch", "--ranks", "2", "--workspace", str(ws))
    assert res.returncode == 0, res.stderr
    assert target.exists() and (ws / ".vscode" / "tasks.json").exists() and not (target.parent / "tasks.json").exists()
