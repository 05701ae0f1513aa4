"""SshProvider against real sshd hosts in network namespaces, with real debugpy ranks."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from dbgfwd.errors import AuthError, ExitCode, UnreachableError, UpstreamError
from dbgfwd.net.relay import Relay
from dbgfwd.providers.ssh import SshProvider
from tests.providers.ssh.helpers import bridge, config_with, established_ssh_sessions, eventually, make_provider
from tests.support.dap import debug_round
from tests.support.echo_server import EchoServer
from tests.support.ranks import BREAK_LINE

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]


@pytest.fixture
def provider_for(lab):
    made = []

    def make(*targets, config=None, **options):
        p = make_provider(config or lab.ssh_config, *targets, **options)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


def test_discovers_ranks_from_markers_on_each_host(lab, provider_for):
    with lab.client.inside():
        found = provider_for("h1", "h2", "hidden", "deep").discover()
    by_name = {t.name: t for t in found.targets}
    assert [t.name for t in found.targets] == ["h1", "h2", "hidden", "deep"]
    for index, name in enumerate(("h1", "h2", "hidden")):
        target = by_name[name]
        assert target.running and target.node_index == index
        assert [(r.rank, r.local_rank, r.port) for r in target.ranks] == [
            (2 * index, 0, 5678), (2 * index + 1, 1, 5679)]
        assert target.rank_base == 2 * index
    # deep is reachable (two ProxyJump hops) but runs no ranks yet: waiting, not failed
    assert by_name["deep"].running and by_name["deep"].ranks == ()


def test_ranks_per_node_lays_out_ranks_without_markers(lab, provider_for):
    with lab.client.inside():
        found = provider_for("h2", "deep", rpn=3).discover()
    assert [[(r.rank, r.port) for r in t.ranks] for t in found.targets] == [
        [(0, 5678), (1, 5679), (2, 5680)], [(3, 5678), (4, 5679), (5, 5680)]]


def test_hostfile_slots_lay_out_uneven_nodes_in_order(lab, provider_for, tmp_path):
    """`h2 slots=1`, `deep slots=3` (Open MPI), `h1:2` (MPICH): ranks fill each host's slots in file order,
    local ranks restart on each host, ports are base + local rank."""
    hostfile = tmp_path / "hosts"
    hostfile.write_text("h2 slots=1\ndeep slots=3   # the big node\nh1:2\n")
    with lab.client.inside():
        found = provider_for(hostfile=hostfile).discover()
    assert [(t.name, t.rank_base, [(r.rank, r.local_rank, r.port) for r in t.ranks]) for t in found.targets] == [
        ("h2", 0, [(0, 0, 5678)]),
        ("deep", 1, [(1, 0, 5678), (2, 1, 5679), (3, 2, 5680)]),
        ("h1", 4, [(4, 0, 5678), (5, 1, 5679)])]


@pytest.mark.parametrize("name", ["h1", "h2", "hidden"])
def test_dap_session_through_each_forward(lab, provider_for, name):
    with lab.client.inside():
        provider = provider_for(name)
        target = provider.discover().targets[0]
        for info in target.ranks:
            port = bridge(provider.open_stream(target, info.port, timeout=10))
            value = debug_round("127.0.0.1", port, str(lab.program), BREAK_LINE, "rank", timeout=30)
            assert value == str(info.rank)


def _adapter_of(host, port: int) -> int:
    """The pid of debugpy's adapter serving `port` on `host` (its own process, found in the host's namespace)."""
    for pid in host.pids():
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"--for-server" in argv and b"--port" in argv and argv[argv.index(b"--port") + 1] == str(port).encode():
            return pid
    raise AssertionError(f"no debugpy adapter for port {port} on {host.name}")


@pytest.mark.parametrize("ending", ["channel", "connection"])
def test_a_forward_that_ends_while_the_ranks_adapter_is_stalled_does_not_end_the_adapter(lab, provider_for, ending):
    """Item 19 of the hardening issue through real sshd: a rank's adapter stalled (a loaded machine deschedules
    it) while a channel to it is opened, and the channel or the whole SSH connection ends before it runs again.
    sshd's connection is dead when the adapter finally accepts it; debugpy's accept thread then ended and every
    later debugger's `initialize` went unanswered (3 of 3 with plain debugpy). The rank's guarded adapter goes
    on serving."""
    host = lab.hosts["h2"]
    with lab.client.inside():
        provider = provider_for("h2")
        target = provider.discover().targets[0]
        info = target.ranks[0]
        adapter = _adapter_of(host, info.port)
        os.kill(adapter, signal.SIGSTOP)
        try:
            stream = provider.open_stream(target, info.port, timeout=10)  # sshd's connect waits in the backlog
            if ending == "channel":
                stream.close()
            else:
                provider.close()  # the SSH connection ends with the channel in it
        finally:
            os.kill(adapter, signal.SIGCONT)
        again = provider_for("h2")
        target = again.discover().targets[0]
        port = bridge(again.open_stream(target, info.port, timeout=10))
        assert debug_round("127.0.0.1", port, str(lab.program), BREAK_LINE, "rank", timeout=30) == str(info.rank)


def test_bulk_both_ways_through_a_relay_with_a_key_exchange_midway(lab, provider_for):
    """8 MB echoed through the relay over one direct-tcpip channel, four times the channel's window: the window
    given back for what paramiko's transport thread wrote straight to the client (dbgfwd.providers.ssh.direct)
    must reach sshd, or the transfer stops at 2 MB. A key exchange in the middle, during which paramiko holds
    every send back, must not stall it either."""
    echo = EchoServer.start(port=0, cmd_prefix=lab.hosts["h1"].prefix())
    try:
        with lab.client.inside():
            provider = provider_for("h1")
            channel = provider.open_stream(provider.discover().targets[0], echo.port, timeout=10)
            with socket.socket() as server:
                server.bind(("127.0.0.1", 0))
                server.listen(1)
                far = socket.create_connection(server.getsockname())
                near, _ = server.accept()
            near.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            relay = Relay(near, channel, name="bulk")
            threading.Thread(target=relay.run, daemon=True).start()
            payload = os.urandom(1 << 20) * 8

            def send() -> None:
                far.sendall(b"E")
                for i in range(0, len(payload), 1 << 16):
                    far.sendall(payload[i:i + (1 << 16)])
                far.shutdown(socket.SHUT_WR)

            threading.Thread(target=send, daemon=True).start()
            received, rekey = bytearray(), None
            far.settimeout(60)
            while True:
                data = far.recv(1 << 18)
                if not data:
                    break
                received += data
                if rekey is None and len(received) > len(payload) // 2:
                    rekey = threading.Thread(target=channel.get_transport().renegotiate_keys, daemon=True)
                    rekey.start()
            far.close()
            assert rekey is not None
            rekey.join(30)
            assert not rekey.is_alive()
            assert len(received) == len(payload) and bytes(received) == payload
            assert channel.in_buffer.direct > 0, "nothing went straight from the transport thread to the client"
            eventually(lambda: relay.closed, 30, "the relay to end")
            assert relay.counters.down == relay.counters.up - 1 == len(payload)
    finally:
        echo.stop()


def test_probe_reads_readiness_out_of_band(lab, provider_for):
    with lab.client.inside():
        provider = provider_for("h2")
        target = provider.discover().targets[0]
        result = provider.probe(target)
    assert result.tcp_known and result.port_ready(5678) and result.port_ready(5679)
    assert not result.port_ready(5699)
    assert sorted(m.rank for m in result.markers) == [2, 3]


def test_one_transport_per_host_shared_by_all_streams(lab, provider_for):
    host = lab.hosts["h1"]
    before = established_ssh_sessions(host)
    with lab.client.inside():
        provider = provider_for("h1")
        target = provider.discover().targets[0]
        streams = []
        threads = [threading.Thread(target=lambda p=p: streams.append(provider.open_stream(target, p, 10)))
                   for p in (5678, 5679, 5678, 5679)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(streams) == 4
        assert established_ssh_sessions(host) - before == 1
        for s in streams:
            s.close()


def test_the_cheapest_cipher_both_sides_have_is_negotiated(lab, provider_for):
    """AES-GCM (one AEAD operation per packet) rather than paramiko's first choice, AES-CTR plus HMAC."""
    from dbgfwd.providers.ssh.connection import HostConnection

    with lab.client.inside():
        provider = provider_for("h1")
        target = provider.discover().targets[0]
        stream = provider.open_stream(target, 5678, 10)
        try:
            conn = next(c for c in provider._connections().values() if isinstance(c, HostConnection))
            transport = conn.transport()
            assert (transport.local_cipher, transport.remote_cipher) == ("aes128-gcm@openssh.com",) * 2
        finally:
            stream.close()


def test_an_idle_transport_wakes_once_a_second_and_close_ends_its_thread_at_once(lab, provider_for):
    """paramiko's transport thread read with a 0.1 s timeout, to notice close() and its keepalive timer: ten
    wake-ups a second per host, half of an idle 4-host attach's CPU. It now wakes once a second, and close()
    shuts the socket down, which ends the thread without waiting for any timeout."""
    from dbgfwd.providers.ssh.connection import HostConnection

    with lab.client.inside():
        provider = provider_for("h1")
        provider.discover()
        conn = next(c for c in provider._connections().values() if isinstance(c, HostConnection))
        transport = conn.transport()
        wakes = []
        check = transport.packetizer._check_keepalive
        transport.packetizer._check_keepalive = lambda: (wakes.append(1), check())
        time.sleep(3)
        assert len(wakes) <= 6  # about 3; paramiko's own timeout made it 30 (load only makes it fewer)
        transport.sock.settimeout(3600)  # from the thread's next read on, only close() can wake it
        time.sleep(1.5)
        transport.close()
        transport.join(10)
        assert not transport.is_alive()


def test_nothing_listening_is_retryable(lab, provider_for):
    with lab.client.inside():
        provider = provider_for("h1")
        target = provider.discover().targets[0]
        with pytest.raises(UpstreamError) as info:
            provider.open_stream(target, 5690, timeout=10)
    assert info.value.retryable and "5690" in info.value.message and "h1" in info.value.message


def test_late_failure_on_a_dead_transport_spares_its_replacement(lab, provider_for, monkeypatch):
    """A stream open that picked up a transport just before it died fails after another thread has
    reconnected: it must close the dead transport, not the fresh one carrying the other forwards."""
    with lab.client.inside():
        provider = provider_for("h1")
        target = provider.discover().targets[0]
        conn = provider.connection(target)
        dead = conn.transport()
        dead.close()
        fresh = conn.transport()
        assert fresh is not dead and fresh.is_active()
        monkeypatch.setattr(conn, "transport", lambda timeout=None: dead)  # the race, made certain
        with pytest.raises(UpstreamError) as info:
            conn.open_channel(5678, 10)
        assert info.value.retryable
        monkeypatch.undo()
        assert fresh.is_active() and conn.transport() is fresh
        assert conn.run("echo still here", 10) == (0, "still here\n")


def test_an_open_confirmed_after_its_caller_gave_up_serves_the_retry_and_opens_nothing_more(lab, provider_for):
    """A link stalled while a debugger's stream was being opened: the server confirms the open after dbgfwd gave up
    on it. paramiko kept such a channel open and unread (sshd's connection to the rank's debugpy with it) and the
    retry opened a second one; the first was closed without a word when the transport closed, which can leave
    debugpy unable to serve the next debugger. Now the retry gets the late channel, and it works."""
    import json

    with lab.client.inside():
        provider = provider_for("h1")
        target = provider.discover().targets[0]
        conn = provider.connection(target)
        transport = conn.transport()
        real_open, opened, late_done = transport.open_channel, [], threading.Event()
        server_confirms = threading.Event()

        def stalled_open(*args, **kwargs):
            server_confirms.wait(30)  # the link is stalled until the test lets the confirmation through
            channel = real_open(*args, **kwargs)
            opened.append(channel)
            late_done.set()
            return channel

        transport.open_channel = stalled_open
        try:
            with pytest.raises(UpstreamError) as info:
                conn.open_channel(5678, 0.3)
            assert info.value.retryable and "did not finish" in info.value.message
            server_confirms.set()
            assert late_done.wait(30)
            retry = conn.open_channel(5678, 10)
            assert opened == [retry]  # the retry got the late channel; nothing else was opened
            pending = bytearray()

            def request(seq: int, command: str, arguments: dict) -> None:  # and wait for its answer
                body = json.dumps({"seq": seq, "type": "request", "command": command, "arguments": arguments})
                retry.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body.encode())
                while True:
                    head, sep, rest = bytes(pending).partition(b"\r\n\r\n")
                    size = int(head.split(b":")[1]) if sep else -1
                    if sep and len(rest) >= size:
                        message = json.loads(rest[:size])
                        del pending[:len(head) + 4 + size]
                        if message.get("type") == "response" and message.get("request_seq") == seq:
                            assert message["success"], message
                            return
                        continue
                    chunk = retry.recv(65536)
                    assert chunk, bytes(pending)
                    pending.extend(chunk)

            retry.settimeout(30)
            request(1, "initialize", {"adapterID": "debugpy"})  # the rank's debugpy answers through it
            request(2, "disconnect", {"terminateDebuggee": False})  # and the shared rank is left as it was
            retry.close()
            assert conn._take_late(transport, 5678) is None  # taken once
        finally:
            transport.open_channel = real_open


# ---- one-line errors naming the host and the fix ----

def _fail(lab, tmp_path, alias, host, extra, provider_options=None):
    config = config_with(lab, tmp_path / "ssh_config", {alias: (lab.hosts[host], extra)})
    provider = make_provider(config, alias, **(provider_options or {}))
    try:
        with lab.client.inside():
            provider.discover()
    except Exception as exc:  # noqa: BLE001 - the test inspects what was raised
        return exc
    finally:
        provider.close()
    raise AssertionError("discover() did not fail")


def _one_line(exc):
    assert "\n" not in exc.message and exc.hint and "\n" not in exc.hint
    return exc


def test_auth_failure(lab, tmp_path):
    exc = _one_line(_fail(lab, tmp_path, "badauth", "h1", {"IdentityFile": lab.keys.other_client_key()}))
    assert isinstance(exc, AuthError) and exc.code == ExitCode.AUTH
    assert "authentication" in exc.message and "badauth" in exc.message and "ssh-add" in exc.hint


def test_unknown_host_key_is_refused_by_default(lab, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    exc = _one_line(_fail(lab, tmp_path, "newkey", "h2", {"UserKnownHostsFile": empty}))
    assert isinstance(exc, AuthError) and "not in known_hosts" in exc.message and "SHA256:" in exc.message
    assert "newkey" in exc.message and "--insecure-accept-new-host-keys" in exc.hint


def test_insecure_accept_new_host_keys_is_loud(lab, tmp_path, caplog):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    config = config_with(lab, tmp_path / "ssh_config", {"newkey": (lab.hosts["h2"], {"UserKnownHostsFile": empty})})
    provider = make_provider(config, "newkey", insecure_accept_new_host_keys=True)
    with caplog.at_level(logging.WARNING, logger="dbgfwd.ssh"), lab.client.inside():
        target = provider.discover().targets[0]
    provider.close()
    assert target.running and len(target.ranks) == 2
    assert any("UNVERIFIED" in r.message and "SHA256:" in r.message for r in caplog.records)
    assert empty.read_text() == ""  # never written


def test_changed_host_key_is_refused_even_when_accepting_new_keys(lab, tmp_path):
    stranger = lab.keys.other_client_key()
    wrong = tmp_path / "wrong_known_hosts"
    pub = " ".join(open(f"{stranger}.pub").read().split()[:2])
    wrong.write_text(f"[{lab.hosts['h1'].address}]:2222 {pub}\n")
    exc = _one_line(_fail(lab, tmp_path, "changed", "h1", {"UserKnownHostsFile": wrong},
                          {"insecure_accept_new_host_keys": True}))
    assert isinstance(exc, AuthError) and "CHANGED" in exc.message and "ssh-keygen -R" in exc.hint


def test_unreachable_port(lab, tmp_path):
    exc = _one_line(_fail(lab, tmp_path, "closed", "h1", {"Port": 2299}))
    assert isinstance(exc, UnreachableError) and exc.code == ExitCode.UNREACHABLE
    assert "closed" in exc.message and "connection refused" in exc.message


def test_dns_failure(lab, tmp_path):
    exc = _one_line(_fail(lab, tmp_path, "typo", "h1", {"HostName": "no-such-host.invalid"}))
    assert isinstance(exc, UnreachableError) and "cannot resolve" in exc.message
    assert "no-such-host.invalid" in exc.message and "HostName" in exc.hint


def test_proxyjump_hop_cannot_reach_next_host(lab, tmp_path):
    exc = _one_line(_fail(lab, tmp_path, "behind", "hidden", {"Port": 2299}))
    assert isinstance(exc, UnreachableError)
    assert "ProxyJump host jump could not connect" in exc.message and ":2299" in exc.message


def test_proxyjump_hop_auth_failure_names_the_hop(lab, tmp_path):
    config = config_with(lab, tmp_path / "ssh_config", {
        "badjump": (lab.hosts["jump"], {"IdentityFile": lab.keys.other_client_key()}),
        "behind": (lab.hosts["hidden"], {"ProxyJump": "badjump"})})
    provider = make_provider(config, "behind")
    with lab.client.inside(), pytest.raises(AuthError) as info:
        provider.discover()
    provider.close()
    assert "badjump" in info.value.message and "ProxyJump hop badjump on the way to behind" in info.value.message


def test_failing_host_does_not_stop_the_others(lab, tmp_path):
    config = config_with(lab, tmp_path / "ssh_config", {
        "closed": (lab.hosts["h1"], {"Port": 2299}),
        "badauth": (lab.hosts["h1"], {"IdentityFile": lab.keys.other_client_key()})})
    provider = make_provider(config, "h2", "closed", "badauth", rpn=2)
    try:
        with lab.client.inside():
            good, closed, badauth = provider.discover().targets
            assert good.running and not closed.running and not badauth.running
            assert "connection refused" in closed.status and "authentication" in badauth.status
            assert [r.rank for r in closed.ranks] == [2, 3]  # still planned: forwards wait for the host
            with pytest.raises(UpstreamError) as refused:
                provider.open_stream(closed, 5678, timeout=5)
            assert refused.value.retryable
            with pytest.raises(UpstreamError) as denied:
                provider.open_stream(badauth, 5678, timeout=5)
            assert not denied.value.retryable
            port = bridge(provider.open_stream(good, 5679, timeout=10))
            assert debug_round("127.0.0.1", port, str(lab.program), BREAK_LINE, "rank", timeout=30) == "3"
    finally:
        provider.close()


def test_ssh_agent_keys_are_used(lab, tmp_path, monkeypatch):
    sock = lab.directory / f"agent-{os.getpid()}.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        eventually(sock.exists, 10, "ssh-agent socket")
        env = dict(os.environ, SSH_AUTH_SOCK=str(sock))
        subprocess.run(["ssh-add", "-q", str(lab.keys.client_key)], env=env, check=True,
                       capture_output=True, timeout=10)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        config = config_with(lab, tmp_path / "ssh_config", {
            "viaagent": (lab.hosts["h2"], {"IdentityFile": "none", "IdentitiesOnly": "no"})})
        provider = make_provider(config, "viaagent")
        with lab.client.inside():
            target = provider.discover().targets[0]
        provider.close()
        assert target.running and len(target.ranks) == 2
    finally:
        agent.terminate()
        agent.wait(5)


def test_provider_is_registered():
    from dbgfwd.providers import load

    assert load("ssh") is SshProvider


def test_exit_status_arriving_after_end_of_file_is_waited_for():
    """The interleaving behind a rare `(-1, output)`: sshd's exit-status message is handled by paramiko's
    transport thread just after recv() has returned end-of-file. Forced here with a channel whose status
    lands 0.2 s after its end-of-file; it must be read, not taken as missing."""
    import threading
    import time

    from dbgfwd.providers.ssh.connection import collect_output

    class LateStatusChannel:
        def __init__(self):
            self.chunks = [b"still ", b"here\n", b""]
            self.status_event = threading.Event()
            self.status = None

        def recv(self, n):
            chunk = self.chunks.pop(0)
            if not chunk:  # end of file now, the exit status a little later
                threading.Timer(0.2, self._exit, args=(0,)).start()
            return chunk

        def _exit(self, status):
            self.status = status
            self.status_event.set()

        def settimeout(self, t):
            pass

        def exit_status_ready(self):
            return self.status_event.is_set()

        def recv_exit_status(self):
            self.status_event.wait()
            return self.status

    assert collect_output(LateStatusChannel(), time.monotonic() + 10) == (0, "still here\n")
    never = LateStatusChannel()
    never._exit = lambda status: None  # no status at all: -1 once the deadline passes
    assert collect_output(never, time.monotonic() + 0.3) == (-1, "still here\n")


def test_no_usable_key_is_an_authentication_problem(lab, tmp_path, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    exc = _one_line(_fail(lab, tmp_path, "nokey", "h1", {"IdentityFile": tmp_path / "no_such_key",
                                                         "IdentityAgent": "none"}))
    assert isinstance(exc, AuthError) and exc.code == ExitCode.AUTH, exc
    assert "no usable key" in exc.message and "ssh-add" in exc.hint and "--identity" in exc.hint


def test_a_missing_identity_file_is_refused_up_front(lab, tmp_path):
    from dbgfwd.errors import NotFoundPathError

    config = config_with(lab, tmp_path / "ssh_config", {"h1": (lab.hosts["h1"], {})})
    with pytest.raises(NotFoundPathError) as info:
        make_provider(config, "h1", identity=(tmp_path / "id_typo",))
    assert info.value.code == ExitCode.BAD_FILE and "id_typo" in info.value.message


def test_host_key_alias_is_looked_up_bare_whatever_the_port(lab, tmp_path):
    """OpenSSH looks a HostKeyAlias up in known_hosts as it is, not as [alias]:port."""
    known = tmp_path / "known_hosts"
    known.write_text(f"train-node-alias {lab.keys.host_pub}\n")
    config = config_with(lab, tmp_path / "ssh_config", {"aliased": (lab.hosts["h1"], {
        "HostKeyAlias": "train-node-alias", "UserKnownHostsFile": known})})
    provider = make_provider(config, "aliased")
    try:
        with lab.client.inside():
            (target,) = provider.discover().targets
        assert target.running, target.status
    finally:
        provider.close()
