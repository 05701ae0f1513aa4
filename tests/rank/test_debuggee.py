"""dbgfwd.rank.debuggee: debugpy as dbgfwd starts it in a rank; here, its adapter surviving bad connections."""

from __future__ import annotations

import os
import socket
import struct
import sys

import pytest

from dbgfwd.rank import debuggee
from tests.conftest import free_port_block
from tests.support.dap import debug_round
from tests.support.ranks import BREAK_LINE, start_rank, wait_for_markers, write_program


@pytest.fixture
def rank(tmp_path):
    program = write_program(tmp_path)
    base = free_port_block(1)
    proc = start_rank(program, 0, 0, tmp_path / "run", base_port=base)
    try:
        wait_for_markers(tmp_path / "run", {0}, procs=[proc])
        yield program, base
    finally:
        proc.stop()


def _reset_at_once(port: int) -> None:
    """Connect and reset: the connection is dead before the adapter has even accepted it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_a_connection_reset_as_it_is_accepted_does_not_end_the_adapter(rank):
    """debugpy greets each new debugger inside its accept thread, unguarded: a connection already dead raises
    there, the thread ends, and the port goes on accepting connections nobody answers (item 19 of the
    hardening issue: the rank `connected`, the debugger's `initialize` never answered). A reset before the
    accept makes the greeting fail every time; the debugger after it must be served."""
    program, port = rank
    assert debug_round("127.0.0.1", port, str(program), BREAK_LINE, "rank", timeout=20) == "0"
    for _ in range(3):
        _reset_at_once(port)
        assert debug_round("127.0.0.1", port, str(program), BREAK_LINE, "rank", timeout=20) == "0"


def test_a_connection_closed_at_once_does_not_end_the_adapter(rank):
    program, port = rank
    for _ in range(3):
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    assert debug_round("127.0.0.1", port, str(program), BREAK_LINE, "rank", timeout=20) == "0"


def test_the_guard_is_in_place_only_during_listen_and_then_undone():
    import debugpy.server.api as api

    real = api.adapter
    said: list[str] = []
    with pytest.raises(RuntimeError):
        with debuggee.guarded_adapter(said.append):
            assert os.path.dirname(api.adapter.__file__) == os.path.dirname(
                sys.modules["dbgfwd.rank.adapter"].__file__)
            assert os.environ[debuggee.ADAPTER_PATH_ENV] == os.path.dirname(
                os.path.dirname(sys.modules["debugpy"].__file__))
            raise RuntimeError("listen failed")
    assert api.adapter is real
    assert debuggee.ADAPTER_PATH_ENV not in os.environ
    assert said == []


def test_a_debugpy_without_the_expected_layout_runs_unguarded(monkeypatch):
    import debugpy.server.api as api

    monkeypatch.delattr(api, "adapter")
    said: list[str] = []
    with debuggee.guarded_adapter(said.append):
        assert not hasattr(api, "adapter")
    assert said and "skipped" in said[0]
