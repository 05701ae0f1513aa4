"""`--ssm-backend plugin`: the process contract with session-manager-plugin (a stand-in binary)."""

import sys
from pathlib import Path

import pytest

from dbgfwd.errors import ProviderUnavailable
from dbgfwd.providers.base import ProviderConfig
from dbgfwd.providers.batch import BatchProvider
from tests.providers.batch.test_faults import echo_server

FAKE_PLUGIN = Path(__file__).resolve().parents[2] / "support" / "fake_ssm_plugin.py"


def test_missing_plugin_is_one_clear_line(monkeypatch):
    monkeypatch.delenv("DBGFWD_SSM_PLUGIN", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ProviderUnavailable, match="session-manager-plugin is not installed"):
        BatchProvider(ProviderConfig(targets=("00000000-1111-2222-3333-444444444444",),
                                     options={"ssm_backend": "plugin"}))


@pytest.mark.timeout(60)
def test_plugin_backend_bridges_streams_and_terminates(world, tmp_path, monkeypatch):
    wrapper = tmp_path / "session-manager-plugin"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_PLUGIN} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("DBGFWD_SSM_PLUGIN", str(wrapper))
    srv = echo_server()
    _, ci = world.instance()
    job = world.single_job(ci)
    p = BatchProvider(ProviderConfig(targets=(job,), options={"ssm_backend": "plugin"}))
    try:
        target = p.discover().targets[0]
        for _ in range(2):  # two connections, one plugin process / SSM session
            s = p.open_stream(target, srv.getsockname()[1], 30)
            s.sendall(b"through the plugin")
            got = b""
            while len(got) < 18 and (chunk := s.recv(100)):
                got += chunk
            assert got == b"through the plugin"
            s.close()
        assert len(world.fake.ops("StartSession")) == 1
        proc = next(iter(p._sessions.values())).proc
    finally:
        p.close()
        srv.close()
    assert proc.poll() is not None  # plugin process ended with the session
    assert world.fake.ops("TerminateSession")
    assert world.agent.violations == []
