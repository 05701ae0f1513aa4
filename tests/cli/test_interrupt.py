"""Ctrl-C, SIGTERM and SIGHUP stop every command within about a second, with the documented exit code,
even while it is blocked in an SDK or network call that never returns."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time

import pytest

from dbgfwd.errors import ExitCode
from tests.support import cli


class SilentServer:
    """Accepts TCP connections and never says a word: an API server or sshd that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        # shutdown wakes the thread blocked in accept (close alone does not, on Linux); only once it is gone is
        # the listening socket's descriptor closed, so that no later socket can reuse a number it still uses
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(10)
        assert not self._thread.is_alive(), "the silent server's accept loop did not end"
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.close()


def _interrupt(args, *, after_connections=None, after: float = 1.0, sig=signal.SIGINT, cwd=None):
    """Start `dbgfwd args`, wait until it is blocked (the silent server holds a connection, or `after`
    seconds), send `sig`; return (exit code, seconds from the signal to the exit, stderr)."""
    proc = subprocess.Popen(cli.DBGFWD + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd)
    if after_connections is not None:
        cli.wait_for(lambda: after_connections.conns or proc.poll() is not None, 30, "a blocked connection")
        time.sleep(0.3)  # well inside the blocking call
    else:
        time.sleep(after)
    assert proc.poll() is None, proc.communicate()
    sent = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, time.monotonic() - sent, err, out


def _kubeconfig(path, port):
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
           "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
           "users": [{"name": "u", "user": {"token": "t"}}],
           "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}]}
    path.write_text(json.dumps(cfg))
    return path


def test_ctrl_c_stops_attach_blocked_on_a_silent_api_server(tmp_path, silent):
    kc = _kubeconfig(tmp_path / "kc", silent.port)
    code, took, err, _ = _interrupt(["attach", "--kubeconfig", str(kc), "-w", str(tmp_path), "mypod"],
                                    after_connections=silent)
    assert code == ExitCode.INTERRUPTED, err
    assert took < 3, took  # the API call would block for 60 s
    assert not (tmp_path / ".dbgfwd" / "session.json").exists()
    assert "Traceback" not in err


def test_ctrl_c_stops_ls_blocked_on_a_silent_ssh_host(tmp_path, silent):
    code, took, err, out = _interrupt(["ls", "--provider", "ssh", f"127.0.0.1:{silent.port}"],
                                      after_connections=silent)
    assert code == ExitCode.INTERRUPTED, err
    assert took < 3, took
    assert out == ""


def test_ctrl_c_and_sigterm_stop_wait_with_their_own_codes(tmp_path):
    for sig, expected in ((signal.SIGINT, ExitCode.INTERRUPTED), (signal.SIGTERM, ExitCode.TERMINATED),
                          (signal.SIGHUP, ExitCode.HANGUP)):
        code, took, err, out = _interrupt(["wait", "--timeout", "60", "-w", str(tmp_path)], sig=sig)
        assert code == expected, (sig, code, err)
        assert took < 3
        assert "ready" not in err + out  # `dbgfwd wait && next-step` must not go on


def test_wait_json_prints_a_document_on_timeout(tmp_path):
    res = cli.run("wait", "--timeout", "0.3", "--json", "-w", str(tmp_path))
    assert res.returncode == ExitCode.NO_SESSION, res.stderr
    doc = json.loads(res.stdout)
    assert doc["ready"] is False and doc["exit_code"] == ExitCode.NO_SESSION and "no attach session" in doc["error"]


def test_global_flags_work_after_the_command(tmp_path):
    res = cli.run("ranks", "2", "--json", "-v", "--no-color", "--debug", "-w", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)["ranks"]) == 2
    # ... but not after `--`, where they belong to someone else
    res = cli.run("ranks", "2", "--", "-v")
    assert res.returncode == ExitCode.USAGE
