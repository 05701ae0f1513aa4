"""Waiting on one socket, at descriptor numbers past select()'s FD_SETSIZE (what an attach of 1024 ranks has)."""

from __future__ import annotations

import os
import resource
import socket
import time

import pytest

from dbgfwd.net.listeners import wait_readable
from dbgfwd.net.poll import readable


@pytest.fixture
def high_pair():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1400 if hard == resource.RLIM_INFINITY else min(1400, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    a, b = socket.socketpair()
    high = os.dup2(a.fileno(), 1300)
    a.close()
    a = socket.socket(fileno=high)
    try:
        yield a, b
    finally:
        a.close()
        b.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_readable_past_descriptor_1024_waits_and_then_sees_the_bytes(high_pair):
    a, b = high_pair
    assert a.fileno() > 1024
    started = time.monotonic()
    assert not readable(a, 0.2)
    assert time.monotonic() - started >= 0.19  # it waited; select() raised at once here
    b.sendall(b"x")
    assert readable(a, 5)


def test_a_silent_client_past_descriptor_1024_is_waited_for_not_spun_on(high_pair):
    """The forward waits for a connected client to speak before opening its rank's port; past 1024 select()
    raised, the error was swallowed, and the wait returned at once: a busy loop for every silent client."""
    a, _ = high_pair
    started = time.monotonic()
    wait_readable(a, 0.2)
    assert time.monotonic() - started >= 0.19
