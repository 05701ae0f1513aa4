"""Fault injection through the real `dbgfwd attach` and the local provider.

The upstream is tests/support/echo_server.py (a rank marker + an echo service), SIGKILLed and
restarted while bytes flow; clients check every byte with the data they sent.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from dbgfwd.rank import markers
from tests.support import cli
from tests.support.echo_server import EchoServer
from tests.support.procinfo import fd_count, thread_count

KILLS = 100
PAYLOAD = os.urandom(4 << 20)
STREAM = PAYLOAD * 16  # 64 MB: long enough that every kill lands while bytes flow


def _attach(tmp_path, runtime, base, *extra, name="attach"):
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    bg = cli.Background("attach", "--provider", "local", "--runtime-dir", str(runtime), "--base-port", str(base),
                        "--workspace", str(ws), *extra, log=tmp_path / f"{name}.log")
    return ws, bg


def _echo_transfer(port: int, data: bytes, timeout: float = 30.0, flowing: threading.Event | None = None) -> bytes:
    """Send `data` through the echo service while reading the echo; returns what came back. `flowing` is set
    once the first bytes have come back (the upstream is open and the stream under way)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"E")
        got = bytearray()

        def send():
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        t = threading.Thread(target=send, daemon=True)
        t.start()
        try:
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                got += chunk
                if flowing is not None:
                    flowing.set()
        except OSError:
            pass
        # The forward ended the stream: stop sending, as a debugger that sees its connection end does. The
        # sender may be blocked on a zero window the closed peer keeps advertising (its FIN_WAIT2 remnant
        # answers probes with the last window it had): waiting it out cost 30 s in ~1 of 5 runs, and the
        # `first client settled` wait timed out once when that landed on a held-client round.
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        t.join(timeout)
        return bytes(got)


def _echo_exact(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """Like a debugger: send, read the whole answer, and only then close (never a half-close, which a
    held client's forward takes for a client that left)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"E" + data)
        got = bytearray()
        while len(got) < len(data):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            got += chunk
        return bytes(got)


def _complete_stream(port: int, size: int = 256 << 10) -> None:
    start = random.randrange(len(PAYLOAD) - size)
    data = PAYLOAD[start:start + size]
    got = _echo_transfer(port, data)
    assert len(got) == len(data) and hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), \
        f"completed stream corrupted or short: {len(got)} of {len(data)} bytes"


def _forget_dead_marker(runtime: Path, pid: int) -> None:
    try:
        markers.marker_path(runtime, pid).unlink()
    except FileNotFoundError:
        pass


def _held(ws) -> int:
    return cli.session(ws)["ranks"][0]["held"]


def test_upstream_killed_during_transfers_100_times(tmp_path, port_block):
    runtime = tmp_path / "run"
    port = port_block(1)
    server = EchoServer.start(port=port, rank=0, marker_dir=runtime)
    ws, bg = _attach(tmp_path, runtime, port, "--no-launch-json", "--client-wait", "30")
    try:
        cli.wait_ready(ws, bg=bg)
        local = cli.session(ws)["ranks"][0]["local_port"]
        for _ in range(3):  # warm up (probe worker threads etc.) before taking the baseline
            _complete_stream(local)
        time.sleep(0.5)
        pid = bg.proc.pid
        fds0, threads0 = fd_count(pid), thread_count(pid)

        rng = random.Random(7)
        in_flight = broken_in_flight = 0
        for i in range(KILLS):
            start = rng.randrange(len(PAYLOAD))
            data = memoryview(STREAM)[start:]
            result: dict = {}
            flowing = threading.Event()
            client = threading.Thread(target=lambda: result.update(got=_echo_transfer(local, data, flowing=flowing)))
            client.start()
            # Even rounds kill while bytes flow, by construction (whatever the machine's load); odd rounds at a
            # random moment, which may come before the upstream is open (the client is then held and served).
            mid_stream = i % 2 == 0
            if mid_stream:
                assert flowing.wait(30), f"kill {i}: no byte came back before the kill"
                in_flight += 1
            time.sleep(rng.uniform(0.0, 0.05 if not mid_stream else 0.02))
            server.kill()
            _forget_dead_marker(runtime, server.pid)
            if i % 10 == 9:
                # a client connecting while the rank is down is held and served once it is back.
                # The first client is either cut (it ends) or held too (killed before its upstream opened).
                cli.wait_for(lambda: not client.is_alive() or _held(ws) == 1, what="first client settled",
                             timeout=30)
                before = _held(ws)
                held: dict = {}
                waiter = threading.Thread(target=lambda: held.update(got=_echo_exact(local, PAYLOAD[:65536])))
                waiter.start()
                cli.wait_for(lambda: _held(ws) == before + 1, what="the new client held", timeout=30)
                server = EchoServer.start(port=port, rank=0, marker_dir=runtime)
                waiter.join(30)
                assert held.get("got") == PAYLOAD[:65536], f"kill {i}: held client not served after the restart"
            else:
                server = EchoServer.start(port=port, rank=0, marker_dir=runtime)
            # A kill before the engine reached the upstream leaves the client held: the restarted
            # rank then serves its whole stream. Either way every byte back is a byte sent, in order.
            client.join(60)
            assert not client.is_alive(), f"kill {i}: client hung after the upstream died"
            got = result["got"]
            assert got == data[:len(got)], f"kill {i}: corrupted byte in a broken stream"
            broken_in_flight += mid_stream and len(got) < len(data)
            _complete_stream(local)  # the forward recovered: a full stream, checksummed
        # A 64 MB stream outlasts the 20 ms after its first echo: every such kill cut a live transfer
        assert broken_in_flight == in_flight == KILLS // 2, (broken_in_flight, in_flight)

        # Nothing leaked in the attach process once the dead relays are gone.
        cli.wait_for(lambda: fd_count(pid) <= fds0, timeout=15,
                     what=f"fd count back to {fds0} (now {fd_count(pid)})")
        cli.wait_for(lambda: thread_count(pid) <= threads0, timeout=15,
                     what=f"thread count back to {threads0} (now {thread_count(pid)})")
        rank = cli.session(ws)["ranks"][0]
        assert rank["connections"] >= 2 * KILLS and rank["state"] in ("ready", "connected")
    finally:
        bg.stop()
        server.stop()


def test_local_port_taken_between_runs(tmp_path, port_block):
    runtime = tmp_path / "run"
    base = port_block(1)
    server = EchoServer.start(port=base, rank=0, marker_dir=runtime)
    ports_json = tmp_path / "ws" / ".dbgfwd" / "ports.json"

    def run(*extra, name):
        ws, bg = _attach(tmp_path, runtime, base, *extra, name=name)
        try:
            cli.wait_ready(ws, bg=bg)
            local = cli.session(ws)["ranks"][0]["local_port"]
            _complete_stream(local)
            assert cli.launch_ports(ws / ".vscode" / "launch.json") == {0: local}
            return local
        finally:
            assert bg.stop() == 130, bg.output()

    try:
        first = run(name="run1")
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # run1's TIME_WAIT must not fail the test
        squatter.bind(("127.0.0.1", first))
        squatter.listen(1)
        try:
            second = run(name="run2")
            assert second != first
            assert json.loads(ports_json.read_text())["ports"] == {"0": second}

            # an explicit --local-base-port must be free: one clear line, exit code 4, nothing written
            before = (tmp_path / "ws" / ".vscode" / "launch.json").read_text()
            res = cli.run("attach", "--provider", "local", "--runtime-dir", str(runtime), "--base-port", str(base),
                          "--local-base-port", str(first), "--workspace", str(tmp_path / "ws"), timeout=60)
            assert res.returncode == 4, res.stderr
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and str(first) in lines[0] and "--local-base-port" in lines[0], res.stderr
            assert (tmp_path / "ws" / ".vscode" / "launch.json").read_text() == before
            assert not (tmp_path / "ws" / ".dbgfwd" / "session.json").exists()
        finally:
            squatter.close()
        # the port is free again, but the remembered one wins: launch.json stays valid
        assert run(name="run3") == second
    finally:
        server.stop()


WRITER = r'''
import sys, time
from pathlib import Path
from dbgfwd.vscode import AttachEntry, LaunchOptions, update_launch_json
path, n = Path(sys.argv[1]), int(sys.argv[2])
sets = [[AttachEntry(r, 40000 + r + k * 1000, f"node{r // 8}", r % 8) for r in range(n)] for k in (0, 1)]
print("go", flush=True)
i = 0
while True:
    update_launch_json(path, sets[i % 2], LaunchOptions())
    if not i:
        print("wrote", flush=True)
    i += 1
'''


def _launch_ports_any(path: Path) -> set[int]:
    return set(cli.launch_ports(path).values())


def test_sigterm_during_launch_json_writes_leaves_it_intact(tmp_path):
    """A writer rewriting a 256-rank launch.json in a loop, killed at random moments (SIGTERM's
    default action and SIGKILL: no handler gets to tidy up): the file is always the old or the new
    version, complete and parseable, and the user's own configuration survives."""
    path = tmp_path / ".vscode" / "launch.json"
    path.parent.mkdir()
    mine = {"name": "mine", "type": "debugpy", "request": "launch", "program": "train.py"}
    path.write_text(json.dumps({"version": "0.2.0", "configurations": [mine]}))
    versions = [{40000 + r + k * 1000 for r in range(256)} for k in (0, 1)]
    rng = random.Random(3)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    before: set[int] = set()
    for i in range(20):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "256"], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"go"
        # Rounds 0, 4, 8...: killed while rewriting, after a first write completed (by construction, whatever
        # the load); the others at any moment, which may come before this round wrote anything.
        if i % 4 == 0:
            assert proc.stdout.readline().strip() == b"wrote"
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGTERM if i % 2 else signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        doc = json.loads(cli.strip_jsonc(path.read_text()))
        assert any(c.get("name") == "mine" for c in doc["configurations"]), f"round {i}: user config lost"
        ports = _launch_ports_any(path)
        # the old version (what the last round left) or the new one, never a mix
        assert ports in versions or ports == before, f"round {i}: a mix of versions ({len(ports)} ports)"
        assert ports or i % 4, f"round {i}: killed after a complete write, and no version is there"
        before = ports


def test_sigterm_to_attach_while_it_writes_launch_json(tmp_path, port_block):
    """The real attach, planning 256 ranks (a large first launch.json write), stopped by SIGTERM at
    random moments of its start-up: launch.json is absent-or-complete, no temp files are left behind."""
    rng = random.Random(5)
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    vscode = ws / ".vscode"
    base = port_block(1)
    for i in range(6):
        bg = cli.Background("attach", "--provider", "local", "--runtime-dir", str(tmp_path / "run"), "--ranks", "256",
                            "--base-port", str(base), "--workspace", str(ws), log=tmp_path / f"attach{i}.log")
        # wait until it is past Python start-up (the first write happens right after planning)
        cli.wait_for(lambda: vscode.exists() or bg.proc.poll() is not None, timeout=30, interval=0.01,
                     what="attach started")
        time.sleep(rng.uniform(0.0, 0.3))
        rc = bg.stop(signal.SIGTERM)
        assert rc in (143, -signal.SIGTERM), bg.output()  # ExitCode.TERMINATED after a clean stop
        launch = vscode / "launch.json"
        if launch.exists():
            ports = _launch_ports_any(launch)
            assert len(ports) in (0, 256), f"run {i}: {len(ports)} of 256 ranks in launch.json"
        leftovers = [p.name for d in (vscode, ws / ".dbgfwd") if d.exists() for p in d.iterdir()
                     if p.name.endswith(".tmp")]
        assert not leftovers, f"run {i}: temp files left: {leftovers}"
