"""End to end: `dbgfwd attach --provider ssh` as a subprocess, 2 hosts x 2 ranks under dbgfwd-rank,
a DAP client on every local port from launch.json, and hosts that die and come back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dbgfwd.rank.markers import parse_proc_net_tcp
from tests.providers.ssh.conftest import ROOT
from tests.providers.ssh.helpers import config_with
from tests.support import cli
from tests.support.dap import DapClient, debug_round
from tests.support.procinfo import descendants, kill_group
from tests.support.ranks import BREAK_LINE

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]
LOCAL_BASE = 41000
FAST_FAILOVER = {"ServerAliveInterval": 1, "ServerAliveCountMax": 2, "ConnectTimeout": 3}


class Attach:
    """`dbgfwd attach` running in the lab's client namespace."""

    def __init__(self, lab, workspace, *args):
        self.log = workspace / "attach.log"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(
                [*lab.client.prefix(), sys.executable, "-m", "dbgfwd", "attach", "--provider", "ssh", *args,
                 "--workspace", str(workspace), "--local-base-port", str(LOCAL_BASE)],
                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture
def attached(lab, tmp_path):
    config = config_with(lab, tmp_path / "ssh_config", {
        "node1": (lab.hosts["h1"], FAST_FAILOVER), "node2": (lab.hosts["h2"], FAST_FAILOVER)})
    workspace = tmp_path / "ws"
    workspace.mkdir()
    run = Attach(lab, workspace, "node1", "node2", "--ssh-config", str(config))
    try:
        cli.wait_ready(workspace, timeout=60, bg=run)
        ports = cli.launch_ports(workspace / ".vscode" / "launch.json")
        yield run, workspace, ports
    finally:
        code = run.stop()
        print(run.output()[-3000:])
    assert code == 130, run.output()[-3000:]


def dap(lab, port: int, expression: str = "rank") -> str:
    with lab.client.inside():
        return debug_round("127.0.0.1", port, str(lab.program), BREAK_LINE, expression, timeout=60)


def listening(lab) -> set[int]:
    """Local ports in LISTEN in the client namespace (read from /proc, never by connecting)."""
    return {p for _, p in parse_proc_net_tcp(lab.client.run(["cat", "/proc/net/tcp"]).stdout)}


def target_running(workspace, name: str) -> bool:
    return next(t for t in cli.session(workspace)["targets"] if t["name"] == name)["running"]


def test_attach_two_hosts_two_ranks_each(lab, attached):
    _run, workspace, ports = attached
    assert sorted(ports) == [0, 1, 2, 3]
    assert listening(lab) >= set(ports.values())
    for rank, port in sorted(ports.items()):
        assert dap(lab, port) == str(rank)
        assert dap(lab, port, "value") == str(rank * 100 + 7)


def test_sshd_killed_while_attached(lab, attached):
    _run, workspace, ports = attached
    h1 = lab.hosts["h1"]
    with lab.client.inside():
        client = DapClient("127.0.0.1", ports[0], timeout=60)
    try:
        client.attach({str(lab.program): [BREAK_LINE]})
        stopped = client.wait_stopped(60)
        assert client.evaluate("rank", client.top_frame(stopped["body"]["threadId"])["id"]) == "0"

        h1.kill_sshd()  # listener and the session carrying our forwards
        cli.wait_for(lambda: not target_running(workspace, "node1"), timeout=30, what="node1 seen down")
        assert listening(lab) >= set(ports.values())  # the local ports stay open
        assert dap(lab, ports[2]) == "2"  # the other host is unaffected
    finally:
        client.close()

    # A client that connects while the host is down waits and gets through once it is back.
    result: dict = {}
    waiter = threading.Thread(target=lambda: result.setdefault("value", dap(lab, ports[1])))
    waiter.start()
    cli.wait_for(lambda: _rank(workspace, 1)["state"] == "reconnecting" and _rank(workspace, 1)["held"] == 1,
                 timeout=30, what="the debugger held while h1 is down")
    h1.start_sshd()
    waiter.join(90)
    assert result.get("value") == "1"
    assert dap(lab, ports[0]) == "0"


def test_link_cut_while_idle(lab, attached):
    _run, workspace, ports = attached
    h2 = lab.hosts["h2"]
    h2.cut()  # silent: no FIN, no RST; only missing keepalive answers tell
    try:
        cli.wait_for(lambda: not target_running(workspace, "node2"), timeout=30, what="node2 seen down")
        assert listening(lab) >= set(ports.values())
        assert dap(lab, ports[1]) == "1"  # h1 still forwards
    finally:
        h2.restore()
    cli.wait_for(lambda: target_running(workspace, "node2"), timeout=60, what="node2 back")
    assert dap(lab, ports[3]) == "3"
    assert dap(lab, ports[2]) == "2"


def test_the_openssh_backend_end_to_end(lab, tmp_path):
    """`--ssh-backend openssh`: the user's ssh carries every rank; a silent link cut ends h2's master, the
    forwards wait and come back through a new one, and Ctrl-C leaves no ssh process behind."""
    config = config_with(lab, tmp_path / "ssh_config", {
        "node1": (lab.hosts["h1"], FAST_FAILOVER), "node2": (lab.hosts["h2"], FAST_FAILOVER)})
    workspace = tmp_path / "ws"
    workspace.mkdir()
    run = Attach(lab, workspace, "node1", "node2", "--ssh-config", str(config), "--ssh-backend", "openssh")
    try:
        cli.wait_ready(workspace, timeout=60, bg=run)
        ports = cli.launch_ports(workspace / ".vscode" / "launch.json")
        assert sorted(ports) == [0, 1, 2, 3]
        for rank, port in sorted(ports.items()):
            assert dap(lab, port) == str(rank)
        started = _ours(run.proc.pid)
        assert started, "no ssh of dbgfwd's running"
        h2 = lab.hosts["h2"]
        h2.cut()
        try:
            cli.wait_for(lambda: not target_running(workspace, "node2"), timeout=30, what="node2 seen down")
            assert dap(lab, ports[1]) == "1"
        finally:
            h2.restore()
        cli.wait_for(lambda: target_running(workspace, "node2"), timeout=60, what="node2 back")
        assert dap(lab, ports[3]) == "3"
        started += _ours(run.proc.pid)  # node2's new master
    finally:
        code = run.stop()
        print(run.output()[-3000:])
    assert code == 130
    from dbgfwd.rank.markers import pid_alive

    assert not [pid for pid in started if pid_alive(pid)]  # every ssh it started has ended


def _ours(attach_pid: int) -> list[int]:
    """The ssh processes this attach started (below it in the process tree)."""
    def name(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return ""  # ended since the walk
    return [pid for pid in descendants(attach_pid)[1:] if name(pid) == "ssh"]


def test_a_30s_link_cut_keeps_a_stopped_debugger_and_the_ranks_debugpy(lab, tmp_path):
    """The most common real fault: the laptop loses its network for 30 s while the user sits at a
    breakpoint, with a request in flight. The keepalive allows ~45 s (OpenSSH's defaults, 15 s x 3): the
    debugger stays connected, the request is answered once the link is back, and the rank's debugpy is
    alive afterwards (a new session on the same port works)."""
    config = config_with(lab, tmp_path / "ssh_config", {"node1": (lab.hosts["h1"], {}),
                                                        "node2": (lab.hosts["h2"], {})})
    workspace = tmp_path / "ws"
    workspace.mkdir()
    run = Attach(lab, workspace, "node1", "node2", "--ssh-config", str(config))
    h2 = lab.hosts["h2"]
    try:
        cli.wait_ready(workspace, timeout=60, bg=run)
        ports = cli.launch_ports(workspace / ".vscode" / "launch.json")
        with lab.client.inside():
            client = DapClient("127.0.0.1", ports[2], timeout=90)
        try:
            client.attach({str(lab.program): [BREAK_LINE]})
            thread = client.wait_stopped(60)["body"]["threadId"]
            frame = client.top_frame(thread)["id"]
            assert client.evaluate("rank", frame) == "2"
            h2.cut()
            try:
                time.sleep(2)
                pending = client.send_request("evaluate", {"expression": "rank * 10", "frameId": frame,
                                                           "context": "repl"})  # in flight through the cut
                time.sleep(28)
                assert run.proc.poll() is None
            finally:
                h2.restore()
            assert client.wait_response(pending, timeout=60)["body"]["result"] == "20"
            assert client.evaluate("value", frame) == "207"
            client.continue_(thread)
        finally:
            client.disconnect()
        assert dap(lab, ports[2]) == "2"  # the rank's debugpy survived: a new session works
        assert dap(lab, ports[3]) == "3"
    finally:
        code = run.stop()
        print(run.output()[-3000:])
    assert code == 130


def test_stacks_of_every_rank_on_two_hosts_through_ssh_exec(lab, tmp_path):
    """`dbgfwd stacks` over ssh: each host's ranks signalled and read back in one exec per host."""
    config = config_with(lab, tmp_path / "ssh_config", {"node1": (lab.hosts["h1"], {}),
                                                          "node2": (lab.hosts["h2"], {})})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([*lab.client.prefix(), sys.executable, "-m", "dbgfwd", "stacks", "--provider", "ssh",
                          "node1", "node2", "--ssh-config", str(config), "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [(r["rank"], r["target"]) for r in out["ranks"]] == [(0, "node1"), (1, "node1"), (2, "node2"),
                                                                 (3, "node2")]
    for r in out["ranks"]:
        assert r["error"] is None, r
        (main,) = [t for t in r["threads"] if t["main"]]
        top = main["frames"][0]  # the rank program's loop, on its host
        assert (top["file"], top["function"]) == (str(lab.program), "<module>") and top["line"] in (4, 5, 6, 7)
    assert sorted(rank for g in out["groups"] for rank in g["ranks"]) == [0, 1, 2, 3]
    for name in ("h1", "h2"):
        assert all(p.proc.poll() is None for p in lab.ranks[name])  # nobody was stopped


def test_inject_into_ranks_started_without_dbgfwd_on_two_hosts(lab, tmp_path):
    """A job whose ranks were started as plain `python prog.py` (with -S: their interpreter cannot import
    debugpy, so dbgfwd brings its own through the exec channel). attach --inject makes each debuggable, and
    each host removes what was sent once its ranks have exited."""
    from tests.support.ranks import write_program

    program = write_program(lab.directory, name="plain_prog.py")
    config = config_with(lab, tmp_path / "ssh_config", {"node1": (lab.hosts["h1"], {}),
                                                          "node2": (lab.hosts["h2"], {})})
    procs = []
    for index, name in enumerate(("h1", "h2")):
        for local in range(2):
            env = {"RANK": str(index * 2 + local), "LOCAL_RANK": str(local), "WORLD_SIZE": "4",
                   "PATH": os.environ["PATH"]}
            with open(tmp_path / f"rank{index * 2 + local}.log", "wb") as log:
                procs.append(lab.hosts[name].popen([sys.executable, "-S", str(program)], env=env, stdout=log,
                                                   stderr=subprocess.STDOUT, start_new_session=True))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    run = None
    try:
        time.sleep(0.5)
        run = Attach(lab, workspace, "node1", "node2", "--ssh-config", str(config), "--inject", "--match",
                     "plain_prog", "--base-port", "6200")
        cli.wait_ready(workspace, timeout=120, bg=run)
        ports = cli.launch_ports(workspace / ".vscode" / "launch.json")
        assert sorted(ports) == [0, 1, 2, 3], run.output()
        report = json.loads((workspace / ".dbgfwd" / "inject.json").read_text())
        injected = sorted((r["rank"], r["target"], r["state"], r["port"]) for t in report for r in t["ranks"])
        assert injected == [(0, "node1", "injected", 6200), (1, "node1", "injected", 6201),
                            (2, "node2", "injected", 6200), (3, "node2", "injected", 6201)], report
        assert all(r["applied"][0].endswith("(brought by dbgfwd)") for t in report for r in t["ranks"]), report
        for rank, port in sorted(ports.items()):
            with lab.client.inside():
                try:
                    assert debug_round("127.0.0.1", port, str(program), BREAK_LINE, "rank") == str(rank)
                except BaseException:
                    print(run.output()[-3000:], (tmp_path / f"rank{rank}.log").read_text()[-3000:])
                    raise
        assert all(p.poll() is None for p in procs)
    finally:
        if run is not None:
            assert run.stop() == 130, run.output()[-3000:]
        for p in procs:
            kill_group(p)
    # Each host's reaper (it looks every 2 s) removes the bundle, and the markers written for the ranks, once the
    # ranks are gone.
    deadline = time.monotonic() + 40
    left = None
    while time.monotonic() < deadline:
        left = [p for name in ("h1", "h2") for p in lab.hosts[name].path("/tmp").glob("dbgfwd-inject.*")]
        if not left:
            break
        time.sleep(0.5)
    assert not left, left


def test_job_session_over_ssh_every_rank_and_a_restarted_one(lab, tmp_path):
    """The "dbgfwd: job" session through SSH forwards: a client behaving like VS Code's Python extension gets a
    child session per rank on two hosts; a rank restarted on its host is announced again, and only it."""
    from tests.providers.ssh.conftest import BASE_PORT, start_host_ranks  # noqa: F401
    from tests.support.dap import ExtensionJobSession
    from tests.support.ranks import start_rank, wait_for_markers

    config = config_with(lab, tmp_path / "ssh_config", {"node1": (lab.hosts["h1"], {}),
                                                          "node2": (lab.hosts["h2"], {})})
    workspace = tmp_path / "ws"
    workspace.mkdir()
    run = Attach(lab, workspace, "node1", "node2", "--ssh-config", str(config))
    editor, children = None, {}
    try:
        cli.wait_ready(workspace, timeout=60, bg=run)
        port = cli.session(workspace)["job_port"]
        with lab.client.inside():
            editor = ExtensionJobSession(port)
            for _ in range(4):
                body = editor.next_attach()
                children[body["subProcessId"]] = editor.child(body, {str(lab.program): [BREAK_LINE]})
            assert sorted(children) == [0, 1, 2, 3]
            for rank, child in sorted(children.items()):
                thread_id = child.wait_stopped(60)["body"]["threadId"]
                assert child.evaluate("rank", child.top_frame(thread_id)["id"]) == str(rank)
                child.request("setBreakpoints", {"source": {"path": str(lab.program)}, "breakpoints": []})
                child.continue_(thread_id)

            old = lab.ranks["h1"][1]  # rank 1 on node1
            old.stop(signal.SIGKILL)
            children.pop(1).close()
            host = lab.hosts["h1"]
            new = start_rank(lab.program, 1, 1, runtime_dir=lab.directory / "h1" / "ranks", base_port=BASE_PORT,
                             world_size=6, cmd_prefix=host.prefix(),
                             extra_env={"DBGFWD_RUNTIME_DIR": f"/tmp/dbgfwd-{os.getuid()}",
                                        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
            lab.ranks["h1"][1] = new
            wait_for_markers(host.path(f"/tmp/dbgfwd-{os.getuid()}"), {1}, 60, [new])
            body = editor.next_attach()
            assert body["subProcessId"] == 1 and body["name"] == "rank 1 (node1)", body
            children[1] = editor.child(body, {str(lab.program): [BREAK_LINE]})
            thread_id = children[1].wait_stopped(60)["body"]["threadId"]
            assert children[1].evaluate("rank", children[1].top_frame(thread_id)["id"]) == "1"
            editor.sync()
            announced = [b["subProcessId"] for b in editor.announced]  # in the order the ranks became ready
            assert sorted(announced[:4]) == [0, 1, 2, 3] and announced[4:] == [1], announced
    finally:
        for child in children.values():
            child.close()
        if editor is not None:
            editor.close()
        assert run.stop() == 130, run.output()[-3000:]


def _rank(workspace, rank: int) -> dict:
    return next(r for r in cli.session(workspace)["ranks"] if r["rank"] == rank)
