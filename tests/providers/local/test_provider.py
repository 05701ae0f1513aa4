"""LocalProvider without the engine: what rediscovery reads."""

from __future__ import annotations

import os

import pytest

from dbgfwd import platform
from dbgfwd.providers.base import ProviderConfig
from dbgfwd.providers.local.provider import LocalProvider
from dbgfwd.rank import markers


def test_rediscovery_of_ranks_with_markers_does_not_read_the_socket_table(tmp_path, monkeypatch):
    """Rediscovery runs every few seconds for the whole session: with the job's markers there, the ranks are
    known without the socket table, which the kernel formats socket by socket (13 ms at 2000 sockets)."""
    tmp_path.chmod(0o700)
    m = markers.new_marker(0, 0, 6100, "127.0.0.1", 1, "torchrun", ["train.py"])
    markers.write_marker(m, tmp_path)
    p = LocalProvider(ProviderConfig(options={"runtime_dir": tmp_path}, base_port=6100))
    monkeypatch.setattr(platform, "tcp_table", lambda: pytest.fail("the socket table was read"))
    (target,) = p.discover().targets
    assert [(r.rank, r.port) for r in target.ranks] == [(0, 6100)] and m.pid == os.getpid()


def test_without_markers_discovery_still_looks_for_plain_debugpy_listeners(tmp_path, monkeypatch):
    tmp_path.chmod(0o700)
    read = []
    monkeypatch.setattr(platform, "listening_sockets", lambda: read.append(1) or (frozenset(), {}))
    p = LocalProvider(ProviderConfig(options={"runtime_dir": tmp_path}, base_port=6100))
    assert p.discover().targets == ()
    assert read
