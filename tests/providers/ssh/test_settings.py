"""ssh config resolution: precedence, ProxyJump chains, keepalive settings (no network)."""

from __future__ import annotations

import pytest

from dbgfwd.errors import BadFileError, UsageError
from dbgfwd.providers.base import ProviderConfig
from dbgfwd.providers.ssh.provider import host_specs
from dbgfwd.providers.ssh.settings import Defaults, resolve_all
from dbgfwd.providers.ssh.targets import parse_host_spec

CONFIG = """
Host front
    HostName front.example.test
    User jumper
Host mid
    HostName 10.0.0.2
    Port 2200
    ProxyJump front
Host deep
    HostName 10.1.0.3
    ProxyJump mid,other:2022
    ServerAliveInterval 2
    ServerAliveCountMax 5
    IdentityFile /keys/deep
    IdentitiesOnly yes
Host plain
    User alice
    Port 2222
    StrictHostKeyChecking accept-new
    UserKnownHostsFile /kh/one /kh/two
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "ssh_config"
    path.write_text(CONFIG)
    return str(path)


def resolve(config, text, **defaults):
    return resolve_all([parse_host_spec(text)], Defaults(config_path=config, **defaults))[0]


def test_command_line_beats_config(config):
    s = resolve(config, "bob@plain:2022")
    assert (s.user, s.port, s.hostname) == ("bob", 2022, "plain")
    s = resolve(config, "plain", user="carol")
    assert (s.user, s.port) == ("carol", 2222)
    assert resolve(config, "plain").user == "alice"


def test_known_hosts_and_strict_checking_from_config(config):
    s = resolve(config, "plain")
    assert s.known_hosts[:2] == ("/kh/one", "/kh/two")
    assert s.accept_new_host_keys
    assert not resolve(config, "front").accept_new_host_keys


def test_multi_hop_proxyjump_chain(config):
    s = resolve(config, "deep")
    # front is mid's own jump (first hop gets its own config), then mid, then other:2022
    assert [(j.alias, j.hostname, j.port) for j in s.jumps] == [
        ("front", "front.example.test", 22), ("mid", "10.0.0.2", 2200), ("other", "other", 2022)]
    assert s.jumps[0].user == "jumper"
    assert (s.alive_interval, s.alive_count) == (2.0, 5)
    assert s.identity_files == ("/keys/deep",) and not s.use_agent


def test_jump_loop_is_reported(tmp_path):
    path = tmp_path / "cfg"
    path.write_text("Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n")
    with pytest.raises(UsageError, match="ProxyJump chain"):
        resolve(str(path), "a")


@pytest.mark.parametrize("entry", ["  ProxyJump b\n  ProxyCommand nc %h %p\n", "  ProxyCommand ssh -W %h:%p b\n"])
def test_proxycommand_is_refused_clearly_with_or_without_proxyjump(tmp_path, entry):
    """Alone it used to be ignored: the connection went straight to the host and failed as "cannot resolve"."""
    path = tmp_path / "cfg"
    path.write_text("Host a\n" + entry)
    with pytest.raises(UsageError, match="ProxyCommand is not supported, only ProxyJump") as info:
        resolve(str(path), "a")
    assert info.value.code == 2 and "ProxyJump" in info.value.hint


def test_proxycommand_none_is_no_proxy(tmp_path):
    path = tmp_path / "cfg"
    path.write_text("Host a\n  HostName 10.1.2.3\n  ProxyCommand none\n")
    assert resolve(str(path), "a").hostname == "10.1.2.3"


def test_missing_explicit_config_is_a_missing_file(tmp_path):
    from dbgfwd.errors import ExitCode, NotFoundPathError

    with pytest.raises(NotFoundPathError, match="does not exist") as info:
        resolve(str(tmp_path / "nope"), "a")
    assert info.value.code == ExitCode.BAD_FILE  # one rule for every missing file: exit 8


def test_unparseable_config_is_a_bad_file(tmp_path):
    path = tmp_path / "cfg"
    path.write_text("Host a\n  Port\n")
    with pytest.raises(BadFileError, match="cannot parse ssh config") as info:
        resolve(str(path), "a")
    assert info.value.code == 8  # what the README's table promises for a file that does not parse


def test_hosts_from_all_sources_in_order(tmp_path, monkeypatch):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("hf1 slots=2\nhf2 slots=2\n")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "ignored[1-2]")
    specs = host_specs(ProviderConfig(targets=("u@a:2022",), options={"hostfile": hostfile,
                                                                     "nodelist": "n[1-2]"}))
    assert [s.key for s in specs] == ["u@a:2022", "hf1", "hf2", "n1", "n2"]


def test_slurm_nodelist_is_the_default(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-08]")
    assert [s.host for s in host_specs(ProviderConfig())] == ["gpu07", "gpu08"]


def test_no_hosts_and_duplicate_hosts(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    with pytest.raises(UsageError, match="no SSH hosts"):
        host_specs(ProviderConfig())
    with pytest.raises(UsageError, match="named twice"):
        host_specs(ProviderConfig(targets=("a", "a")))


def test_unreadable_hostfile(tmp_path):
    with pytest.raises(BadFileError, match="cannot read hostfile"):
        host_specs(ProviderConfig(options={"hostfile": tmp_path / "missing"}))
