"""The SSM data channel's sequencing state and handshake, against what a hostile agent could send."""

from __future__ import annotations

import json
import time

import pytest

from dbgfwd.errors import UpstreamError
from dbgfwd.providers.batch.ssm import message as m
from dbgfwd.providers.batch.ssm.handshake import respond
from dbgfwd.providers.batch.ssm.ordering import Inbound


def _msg(seq: int, size: int) -> m.AgentMessage:
    return m.AgentMessage(m.OUTPUT, seq, m.PT_OUTPUT, b"x" * size)


def test_out_of_order_messages_are_bounded_in_bytes_not_only_in_count():
    inbound = Inbound(capacity=10000, max_bytes=4 * 1024 * 1024)
    acked = [inbound.accept(_msg(seq, 1024 * 1024))[0] for seq in range(1, 150)]  # 150 x 1 MiB, all ahead
    assert acked[:4] == [True] * 4 and not any(acked[4:])  # the rest not acked: the agent resends them later
    assert inbound.held_bytes == 4 * 1024 * 1024
    ack, ready = inbound.accept(_msg(0, 10))
    assert ack and [x.sequence for x in ready] == [0, 1, 2, 3, 4] and inbound.held_bytes == 0
    assert inbound.accept(_msg(3, 10)) == (True, [])  # a duplicate: acked again, never delivered twice


@pytest.mark.parametrize("body", [
    {"RequestedClientActions": "SessionType"},
    {"RequestedClientActions": ["x"]},
    {"RequestedClientActions": [{"ActionType": "SessionType", "ActionParameters": ["a"]}]},
    {"RequestedClientActions": [{"ActionType": "SessionType", "ActionParameters": {"Properties": "p"}}]},
    ["not", "an", "object"],
])
def test_a_handshake_of_the_wrong_shape_is_one_clear_error(body):
    msg = m.AgentMessage(m.OUTPUT, 0, m.PT_HANDSHAKE_REQUEST, json.dumps(body).encode())
    with pytest.raises(UpstreamError, match="unreadable handshake") as info:
        respond(msg)
    assert not info.value.retryable


def test_the_retransmit_wait_sleeps_while_idle_and_wakes_for_a_frame_its_timeout_and_close():
    """128 idle SSM sessions polled every 50 ms cost 12 % of a core: the retransmit thread now waits on the window.
    Each wait here is bounded far above what the wake-up takes (60 s idle), so only a missed wake-up fails."""
    import threading

    from dbgfwd.providers.batch.ssm.ordering import Outbound

    out = Outbound(time.monotonic)
    results: list = []
    waiter = threading.Thread(target=lambda: results.append(out.wait_due(idle=60.0)), daemon=True)
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()  # nothing in flight: it sleeps
    written: list = []
    out.send(b"hello", m.PT_OUTPUT, written.extend, lambda: "")
    waiter.join(10)
    assert not waiter.is_alive() and results == [[]]  # woken by the frame entering the empty window
    # Not acknowledged: due again once the timeout has run out, and only then.
    assert out.wait_due(idle=60.0) == written
    out.acknowledged(0)
    closer = threading.Timer(0.2, out.close)
    closer.start()
    assert out.wait_due(idle=60.0) == []  # woken by close
    closer.join()
