"""Security properties of the real CLI: loopback only, no unsolicited connections, no secret leaks,
private state files."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from dbgfwd.rank import markers
from dbgfwd.ui.console import Console, redact
from tests.support import cli
from tests.support import leaky_provider as leaky
from tests.support.echo_server import EchoServer
from tests.support.procinfo import descendants, listening_addrs, owners_of_listener
from tests.support.ranks import start_rank, wait_for_markers, write_program

LOOPBACK = {"127.0.0.1", "::1"}


def _attach(tmp_path, runtime, base, *extra, name="attach"):
    ws = tmp_path / f"ws-{name}"
    ws.mkdir(exist_ok=True)
    bg = cli.Background("attach", "--provider", "local", "--runtime-dir", str(runtime), "--base-port", str(base),
                        "--workspace", str(ws), *extra, log=tmp_path / f"{name}.log")
    return ws, bg


# ---------------------------------------------------------------- loopback only

def test_forwards_and_ranks_listen_on_loopback_only(tmp_path, port_block):
    runtime = tmp_path / "run"
    base = port_block(2)
    rank = start_rank(write_program(tmp_path), 0, 0, runtime, base_port=base)
    echo = EchoServer.start(port=base + 1, rank=1, local_rank=1, marker_dir=runtime)
    wait_for_markers(runtime, {0, 1}, procs=[rank])
    ws, bg = _attach(tmp_path, runtime, base)
    try:
        cli.wait_ready(ws, bg=bg)
        forwards = listening_addrs(bg.proc.pid)  # the two forwards and the job session
        assert len(forwards) == 3 and {ip for ip, _ in forwards} <= LOOPBACK, forwards
        assert cli.session(ws)["job_port"] in {p for _, p in forwards}
        # the rank launcher's debugpy (and its adapter process, which it does not parent) too
        owners = owners_of_listener(base)
        assert owners, "nobody listens on the rank's port"
        rank_socks = listening_addrs(*descendants(rank.proc.pid), *owners)
        assert base in {p for _, p in rank_socks}
        assert {ip for ip, _ in rank_socks} <= LOOPBACK, rank_socks
        assert "warning" not in bg.output()
    finally:
        bg.stop()
        rank.stop()
        echo.stop()


def test_listening_beyond_loopback_needs_bind_and_warns(tmp_path, port_block):
    runtime = tmp_path / "run"
    base = port_block(1)
    echo = EchoServer.start(port=base, rank=0, marker_dir=runtime)
    ws, bg = _attach(tmp_path, runtime, base, "--bind", "0.0.0.0", "--no-launch-json")
    try:
        cli.wait_ready(ws, bg=bg)
        job = cli.session(ws)["job_port"]
        assert {ip for ip, p in listening_addrs(bg.proc.pid) if p != job} == {"0.0.0.0"}
        # the job session names 127.0.0.1 forwards to a local editor: it stays on loopback whatever --bind says
        assert {ip for ip, p in listening_addrs(bg.proc.pid) if p == job} == {"127.0.0.1"}
        warning = [line for line in bg.output().splitlines() if "warning" in line]
        assert warning and "0.0.0.0" in warning[0] and "authentication" in warning[0], bg.output()
    finally:
        bg.stop()
        echo.stop()


# ---------------------------------------------------------------- no unsolicited connections

def _accepts(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_rank_ports_see_connections_only_on_behalf_of_a_client(tmp_path, port_block):
    """Ranks watched through discovery, probes, a rank restart and status/wait/ls see no connection;
    a client on one forward causes exactly one connection, to its own rank."""
    runtime = tmp_path / "run"
    logs = [tmp_path / f"accepts-{r}.log" for r in range(3)]
    base = port_block(3)
    servers = [EchoServer.start(port=base + r, rank=r, marker_dir=runtime, accept_log=logs[r]) for r in range(3)]
    ws, bg = _attach(tmp_path, runtime, base)
    try:
        cli.wait_ready(ws, bg=bg)
        port1 = servers[1].port
        servers[1].kill()  # restart: the engine goes waiting -> ready through out-of-band probes only
        cli.wait_for(lambda: cli.session(ws)["ranks"][1]["state"] == "waiting", what="rank 1 waiting")
        servers[1] = EchoServer.start(port=port1, rank=1, marker_dir=runtime, accept_log=logs[1])
        cli.wait_ready(ws, bg=bg)
        for args in (("status", "--workspace", str(ws)), ("wait", "--timeout", "10", "--workspace", str(ws)),
                     ("ls", "--provider", "local", "--runtime-dir", str(runtime), "--base-port", str(base)),
                     ("attach", "--list", "--provider", "local", "--runtime-dir", str(runtime),
                      "--base-port", str(base), "--workspace", str(ws))):
            res = cli.run(*args)
            assert res.returncode == 0, (args, res.stderr)
        cli.wait_for(lambda: cli.session(ws)["ranks"][0]["state"] == "ready", what="rank 0 ready")
        import time

        time.sleep(3.0)  # several monitor cycles: probes, rediscovery, keepalive
        assert [_accepts(p) for p in logs] == [0, 0, 0]

        local2 = cli.session(ws)["ranks"][2]["local_port"]
        for _ in range(5):  # a port scanner (nc -z): connect and close on the forward, never a word
            socket.create_connection(("127.0.0.1", local2), timeout=10).close()
        with socket.create_connection(("127.0.0.1", local2), timeout=10) as c:
            c.sendall(b"Eping")
            assert c.recv(4) == b"ping"
        time.sleep(1.0)
        assert [_accepts(p) for p in logs] == [0, 0, 1]
    finally:
        bg.stop()
        for s in servers:
            s.stop()


def test_a_connection_that_never_speaks_never_reaches_the_rank(tmp_path, port_block):
    """Connected and silent (a scanner that holds its connection, a stray `nc`): no upstream is opened for
    it; once --client-wait passes it is closed, having caused no connection to the rank."""
    runtime = tmp_path / "run"
    log = tmp_path / "accepts.log"
    base = port_block(1)
    server = EchoServer.start(port=base, rank=0, marker_dir=runtime, accept_log=log)
    ws, bg = _attach(tmp_path, runtime, base, "--client-wait", "1")
    try:
        cli.wait_ready(ws, bg=bg)
        local = cli.session(ws)["ranks"][0]["local_port"]
        with socket.create_connection(("127.0.0.1", local), timeout=20) as silent:
            assert silent.recv(1) == b""  # closed by dbgfwd once the wait is over (a relay would keep it open)
        assert _accepts(log) == 0
        with socket.create_connection(("127.0.0.1", local), timeout=20) as c:  # one that speaks is served
            c.sendall(b"Eping")
            assert c.recv(4) == b"ping"
        assert _accepts(log) == 1
    finally:
        bg.stop()
        server.stop()


def test_a_debugger_that_hung_up_while_held_never_reaches_the_rank_that_starts_later(tmp_path, port_block):
    """The client sent its `initialize` and gave up while the rank was not up yet: when the rank starts,
    nothing is opened to it on that client's behalf (its bytes are still buffered in our socket; only a
    hang-up check tells). The next debugger is served."""
    runtime = tmp_path / "run"
    accepts = tmp_path / "accepts.log"
    base = port_block(1)
    ws, bg = _attach(tmp_path, runtime, base, "--ranks", "1", "--client-wait", "60")
    server = None
    try:
        cli.wait_for(lambda: (ws / ".dbgfwd" / "session.json").exists(), what="session.json", timeout=30)
        local = cli.session(ws)["ranks"][0]["local_port"]
        for _ in range(3):
            c = socket.create_connection(("127.0.0.1", local), timeout=10)
            c.sendall(b"Eping")  # its first request, left unread: the rank is not there
            cli.wait_for(lambda: cli.session(ws)["ranks"][0]["reason"], what="the client held")
            c.close()  # ...and the debugger gives up
        server = EchoServer.start(port=base, rank=0, marker_dir=runtime, accept_log=accepts)
        cli.wait_ready(ws, bg=bg)
        import time

        time.sleep(2.0)  # the held clients' threads have seen the rank come up, and their hang-up
        assert _accepts(accepts) == 0
        with socket.create_connection(("127.0.0.1", local), timeout=10) as c:
            c.sendall(b"Eping")
            assert c.recv(4) == b"ping"
        time.sleep(0.5)
        assert _accepts(accepts) == 1
    finally:
        bg.stop()
        if server:
            server.stop()


# ---------------------------------------------------------------- secrets

T = "s3cr3tVALUE0123456789"
LEAKY_TEXTS = [
    f"Authorization: Bearer {T}", f"headers={{'authorization': 'bearer {T}'}}", f"b'Authorization: Bearer {T}\\r\\n'",
    f"Proxy-Authorization: Basic {T}", f'{{"TokenValue": "{T}"}}', f"{{'TokenValue': b'{T}'}}", f"TokenValue = {T}",
    f"{{'SessionId': 's', 'TokenValue': '{T}', 'StreamUrl': 'wss://ssmmessages.x.amazonaws.com/v1/data-channel/s?"
    f"role=publish_subscribe&cell={T}'}}",
    f"https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={T}",
    f"X-Amz-Security-Token: {T}", f"aws_session_token={T}", f"AWS_SECRET_ACCESS_KEY={T}",
    f"Authorization: AWS4-HMAC-SHA256 Credential=AKIA/1/us-east-1/ssm/aws4_request, SignedHeaders=host, Signature={T}",
    f"passphrase={T}", f"using key passphrase '{T}'", f"{{'key_passphrase': '{T}'}}", f"password: {T}",
    f"access_token={T}", f'{{"refresh_token": "{T}"}}', f"id-token: {T}", f"client-secret={T}", f"api_key={T}",
    f"sha256~{T}", f"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzYTpkZWZhdWx0In0.{T}", f"https://user:{T}@proxy.example:3128/",
    f"Cookie: session={T}", f"-----BEGIN OPENSSH PRIVATE KEY-----\n{T}\n-----END OPENSSH PRIVATE KEY-----",
    f"-----BEGIN RSA PRIVATE KEY-----\n{T}",  # cut short: still redacted
]


@pytest.mark.parametrize("text", LEAKY_TEXTS)
def test_redaction_removes_the_secret(text):
    out = redact(text)
    assert T not in out, out
    assert "redacted" in out


@pytest.mark.parametrize("text", [
    "rank 0: nothing listens on 127.0.0.1:5678 (rank not started or restarting)",
    "ssh node01: Permission denied (publickey,password).",
    "wrote 4 attach configs to /home/me/tokens-project/.vscode/launch.json",
    "pod worker-1 is Pending", "GET /api/v1/namespaces/ml/pods?labelSelector=job-name%3Dtrain",
])
def test_redaction_leaves_ordinary_messages_alone(text):
    assert redact(text) == text


def test_log_records_and_tracebacks_are_redacted_at_every_verbosity(capsys):
    console = Console()
    for verbosity in (0, 1, 2):
        console.configure(verbosity=verbosity)
        try:
            logging.getLogger("dbgfwd.test").error("stream %s", f"wss://h/x?token={T}")
            logging.getLogger("botocore.endpoint").debug("Response body: {'TokenValue': '%s'}", T)
            try:
                raise RuntimeError(f"exec failed: Authorization: Bearer {T}")
            except RuntimeError:
                logging.getLogger("dbgfwd.test").exception("probe failed")
                console.traceback()
            console.info(f"passphrase={T}")
            console.warn(f"TokenValue={T}")
            console.error(f"token {T!r}", hint=f"api_key={T}")
        finally:
            logging.getLogger().removeHandler(console._handler)
        err = capsys.readouterr().err
        assert "Traceback" in err and "probe failed" in err
        assert T not in err, err


def _leaky_attach(tmp_path, verbosity: str, port: int):
    ws = tmp_path / f"ws{verbosity}"
    ws.mkdir()
    log = tmp_path / f"leaky{verbosity}.log"
    fh = open(log, "wb")
    proc = subprocess.Popen(leaky.cli_command(verbosity, "attach", "--provider", "leaky", "--leaky-port", str(port),
                                              "--workspace", str(ws), "--client-wait", "5", leaky.PRESIGNED),
                            stdout=fh, stderr=subprocess.STDOUT, env=leaky.cli_env(), start_new_session=True)
    return ws, log, fh, proc


@pytest.mark.parametrize("verbosity", ["-v", "-vv"])
def test_cli_never_shows_or_stores_secrets(tmp_path, verbosity):
    echo = EchoServer.start()
    ws, log, fh, proc = _leaky_attach(tmp_path, verbosity, echo.port)
    try:
        session = ws / ".dbgfwd" / "session.json"
        cli.wait_for(session.exists, what="session.json", timeout=30)
        local = cli.session(ws)["ranks"][0]["local_port"]
        with socket.create_connection(("127.0.0.1", local), timeout=10) as c:
            c.sendall(b"Content-Length: 2\r\n\r\n{}")  # a debugger's first request opens the upstream...
            try:
                c.recv(1)  # ...which fails for good: the rank goes FAILED with the provider's message
            except ConnectionResetError:
                pass
        cli.wait_for(lambda: cli.session(ws)["ranks"][0]["state"] == "failed", what="rank failed", timeout=30)
        import time

        time.sleep(2.5)  # probes failing with tracebacks, keepalives
        stored = {p.name: p.read_text() for p in (ws / ".dbgfwd").glob("*.json")}
        stored["launch.json"] = (ws / ".vscode" / "launch.json").read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        fh.close()
        echo.stop()
    out = log.read_text()
    assert "presigned log URL" in out and "SSM refused" in out, out  # the logs were emitted...
    if verbosity == "-vv":
        assert "TokenValue" in out and "Traceback" in out, out
    for secret in leaky.SECRETS:  # ...without their secrets
        assert secret not in out, f"{secret} in output:\n{out}"
        for name, text in stored.items():
            assert secret not in text, f"{secret} in {name}:\n{text}"
    assert "SSM refused" in stored["session.json"]


@pytest.mark.parametrize("args", [
    ("--debug", "-vv", "ls", "--provider", "leaky", "--leaky-fail"),
    ("-vv", "ls", "--provider", "leaky", "--leaky-port", "1"),
    ("-vv", "ls", "--provider", "leaky", "--leaky-port", "1", "--json"),
])
def test_ls_and_error_paths_never_show_secrets(args):
    res = subprocess.run(leaky.cli_command(*args), capture_output=True, text=True, env=leaky.cli_env(), timeout=60)
    out = res.stdout + res.stderr
    if "--leaky-fail" in args:
        assert res.returncode == 5 and "Traceback" in out, out
    else:
        assert res.returncode == 0 and "leaky-0" in out, out
    for secret in leaky.SECRETS:
        assert secret not in out, f"{secret} in output:\n{out}"


# ---------------------------------------------------------------- file modes

def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_files_and_backups_are_private(tmp_path, port_block):
    runtime = tmp_path / "run"
    base = port_block(1)
    echo = EchoServer.start(port=base, rank=0, marker_dir=runtime)
    ws = tmp_path / "ws-attach"
    ws.mkdir()
    (ws / ".dbgfwd").mkdir(parents=True)
    os.chmod(ws / ".dbgfwd", 0o755)  # left permissive by hand or by an older version
    (ws / ".vscode").mkdir()
    (ws / ".vscode" / "launch.json").write_text(json.dumps(
        {"version": "0.2.0", "configurations": [{"name": "mine", "type": "debugpy", "request": "launch"}]}))
    _, bg = _attach(tmp_path, runtime, base)
    try:
        cli.wait_ready(ws, bg=bg)
        assert _mode(ws / ".dbgfwd") == 0o700
        assert _mode(ws / ".dbgfwd" / "session.json") == 0o600
        assert _mode(ws / ".dbgfwd" / "ports.json") == 0o600
        assert _mode(runtime) == 0o700
        assert {_mode(p) for p in runtime.glob(markers.MARKER_GLOB)} == {0o600}
        backups = [p for p in (ws / ".vscode").iterdir() if p.name != "launch.json" and "launch" in p.name]
        assert len(backups) == 1 and _mode(backups[0]) == 0o600, backups  # the user's file, backed up once
    finally:
        bg.stop()
        echo.stop()
    from dbgfwd.vscode import AttachEntry, LaunchOptions, update_launch_json

    # the library call (gen-launch's path) backs up a user's file privately too, even one left world-readable
    other = tmp_path / "ws-gen" / ".vscode" / "launch.json"
    other.parent.mkdir(parents=True)
    other.write_text('{"version": "0.2.0", "configurations": [{"name": "mine", "type": "debugpy"}]}')
    os.chmod(other, 0o644)
    result = update_launch_json(other, [AttachEntry(0, 40000, "n", 0)], LaunchOptions())
    assert result.backup is not None and _mode(Path(result.backup)) == 0o600


def test_console_handler_formatter_is_redacting():
    console = Console()
    buf = io.StringIO()
    console.configure(verbosity=2)
    try:
        handler = console._handler
        handler.setStream(buf)
        logging.getLogger("paramiko.transport").debug("auth with passphrase %r", T)
    finally:
        logging.getLogger().removeHandler(console._handler)
    assert "passphrase" in buf.getvalue() and T not in buf.getvalue()
