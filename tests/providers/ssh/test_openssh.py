"""`--ssh-backend openssh`: the same real sshd hosts reached through the real `ssh` client (ControlMaster
multiplexing, `ssh -W` per debugger connection), with real debugpy ranks."""

from __future__ import annotations

import os
import subprocess

import pytest

from dbgfwd.errors import AuthError, ExitCode, UnreachableError, UpstreamError, UsageError
from tests.providers.ssh.helpers import bridge, config_with, established_ssh_sessions, eventually, make_provider
from tests.support.dap import debug_round
from tests.support.ranks import BREAK_LINE

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]
OPENSSH = {"ssh_backend": "openssh"}


@pytest.fixture
def provider_for(lab):
    made = []

    def make(*targets, config=None, **options):
        p = make_provider(config or lab.ssh_config, *targets, **{**OPENSSH, **options})
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


def _ssh_processes_under(directory: str) -> list[int]:
    """Our ssh processes: the ones naming a control socket in `directory`."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if any(directory.encode() in a for a in argv):
                out.append(int(pid))
    return out


def test_ranks_behind_two_proxyjump_hops_and_a_dap_session_through_each(lab, provider_for):
    with lab.client.inside():
        provider = provider_for("h1", "hidden", "deep")
        found = provider.discover()
        h1, hidden, deep = found.targets
        assert [(t.name, t.running, [(r.rank, r.port) for r in t.ranks]) for t in found.targets] == [
            ("h1", True, [(0, 5678), (1, 5679)]), ("hidden", True, [(4, 5678), (5, 5679)]), ("deep", True, [])]
        for target in (h1, hidden):
            for info in target.ranks:
                stream = provider.open_stream(target, info.port, timeout=10)
                assert type(stream).__mro__[1].__name__ == "socket"  # a real socket: the relay's fast path
                port = bridge(stream)
                assert debug_round("127.0.0.1", port, str(lab.program), BREAK_LINE, "rank", timeout=30) == \
                    str(info.rank)
        result = provider.probe(h1)
        assert result.port_ready(5678) and not result.port_ready(5699)


def test_one_master_per_host_carries_every_stream_and_ends_with_the_provider(lab, provider_for):
    host = lab.hosts["h2"]
    before = established_ssh_sessions(host)
    with lab.client.inside():
        provider = provider_for("h2")
        target = provider.discover().targets[0]
        streams = [provider.open_stream(target, p, 10) for p in (5678, 5679, 5678)]
        assert established_ssh_sessions(host) - before == 1
        control = provider._control_dir
        assert (os.stat(control).st_mode & 0o777) == 0o700
        assert len(_ssh_processes_under(control)) == 1 + len(streams)  # the master and one -W per stream
        streams[0].close()
        assert len(_ssh_processes_under(control)) == len(streams)  # closing a stream ends its ssh at once
        provider.close()
        assert _ssh_processes_under(control) == [] and not os.path.exists(control)
    eventually(lambda: established_ssh_sessions(host) == before, 10, "the master's connection closed")


def test_nothing_listening_is_retryable_and_commands_keep_their_exit_status(lab, provider_for):
    with lab.client.inside():
        provider = provider_for("h1")
        target = provider.discover().targets[0]
        with pytest.raises(UpstreamError) as info:
            provider.open_stream(target, 5690, timeout=10)
        assert info.value.retryable and "5690" in info.value.message and "h1" in info.value.message
        conn = provider.connection(target)
        assert conn.run("echo out; echo err >&2; exit 3", 10) == (3, "out\n")
        assert conn.run("cat", 10, stdin=b"fed\n") == (0, "fed\n")


def test_the_users_own_controlmaster_is_used_and_left_running(lab, tmp_path, provider_for):
    """A two-factor host: the user logged in once with a ControlMaster; dbgfwd rides on it (no login of its
    own, no new connection to the host) and leaves it running."""
    host = lab.hosts["h1"]
    sock = tmp_path / "cm.sock"
    config = config_with(lab, tmp_path / "ssh_config", {"mine": (host, {"ControlPath": sock})})
    master = subprocess.Popen([*lab.client.prefix(), "ssh", "-F", str(config), "-M", "-N", "mine"],
                              stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        eventually(sock.exists, 30, "the user's control socket")
        before = established_ssh_sessions(host)
        with lab.client.inside():
            provider = provider_for("mine", config=config)
            target = provider.discover().targets[0]
            port = bridge(provider.open_stream(target, 5679, 10))
            assert debug_round("127.0.0.1", port, str(lab.program), BREAK_LINE, "rank", timeout=30) == "1"
            assert established_ssh_sessions(host) == before  # nothing but the user's connection
            assert _ssh_processes_under(provider._control_dir) == []  # no master of dbgfwd's
            provider.close()
        assert master.poll() is None  # the user's master outlives dbgfwd
    finally:
        master.terminate()
        master.wait(10)


def test_a_dead_master_is_replaced(lab, provider_for):
    """The connection dies (sshd's session killed): the rank is seen down, then back, without a restart."""
    host = lab.hosts["h2"]
    with lab.client.inside():
        provider = provider_for("h2")
        target = provider.discover().targets[0]
        conn = provider.connection(target)
        host.kill_sshd()
        try:
            eventually(lambda: not conn.connected, 30, "the master seen gone")
            assert not provider.discover().targets[0].running
        finally:
            host.start_sshd()
        target = eventually(lambda: next((t for t in provider.discover().targets if t.running), None), 30,
                            "h2 back")
        port = bridge(provider.open_stream(target, 5678, 10))
        assert debug_round("127.0.0.1", port, str(lab.program), BREAK_LINE, "rank", timeout=30) == "2"
        assert conn.connects == 2


def _fail(lab, tmp_path, alias, host, extra):
    config = config_with(lab, tmp_path / "ssh_config", {alias: (lab.hosts[host], extra)})
    provider = make_provider(config, alias, **OPENSSH)
    try:
        with lab.client.inside():
            provider.discover()
    except Exception as exc:  # noqa: BLE001 - the test inspects what was raised
        assert "\n" not in exc.message and exc.hint and "\n" not in exc.hint
        return exc
    finally:
        provider.close()
    raise AssertionError("discover() did not fail")


def test_what_ssh_says_becomes_one_line_and_an_exit_code(lab, tmp_path):
    auth = _fail(lab, tmp_path, "badauth", "h1", {"IdentityFile": lab.keys.other_client_key()})
    assert isinstance(auth, AuthError) and auth.code == ExitCode.AUTH and "Permission denied" in auth.message
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    key = _fail(lab, tmp_path, "newkey", "h2", {"UserKnownHostsFile": empty, "StrictHostKeyChecking": "yes"})
    assert isinstance(key, AuthError) and "host key" in key.message and empty.read_text() == ""
    closed = _fail(lab, tmp_path, "closed", "h1", {"Port": 2299})
    assert isinstance(closed, UnreachableError) and "Connection refused" in closed.message


def test_an_unknown_backend_is_a_usage_error(lab):
    with pytest.raises(UsageError) as info:
        make_provider(lab.ssh_config, "h1", ssh_backend="putty")
    assert "putty" in info.value.message and "openssh" in info.value.hint


def test_paramiko_points_at_the_openssh_backend_for_proxycommand(lab, tmp_path):
    config = config_with(lab, tmp_path / "ssh_config", {"proxied": (lab.hosts["h1"], {
        "ProxyCommand": "nc %h %p"})})
    provider = make_provider(config, "proxied")
    with pytest.raises(UsageError) as info:
        provider.discover()
    assert "--ssh-backend openssh" in info.value.hint
    provider = make_provider(config, "proxied", **OPENSSH)
    try:  # ssh runs the ProxyCommand itself (nc is not needed for ssh -G)
        assert provider._connections()["proxied"].settings.alias == "proxied"
    finally:
        provider.close()
