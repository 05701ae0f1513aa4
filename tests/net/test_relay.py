"""dbgfwd.net.relay with socket pairs standing in for the debugger and the rank's adapter."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from dbgfwd.net.dapframes import frame
from dbgfwd.net.relay import Relay

pytestmark = pytest.mark.timeout(30)


def _message(**body) -> bytes:
    return frame(json.dumps(body).encode())


def _read_message(sock) -> dict:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(1)
    length = int(data.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    return json.loads(body)


def _up_done(relay: Relay) -> None:
    deadline = time.monotonic() + 10
    while relay._remaining > 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert relay._remaining <= 1, "the client's direction did not finish"


@pytest.mark.parametrize("command", ["disconnect", "terminate"])
def test_a_debugger_that_detached_itself_gets_no_second_disconnect(command):
    """debugpy's adapter closes a client's stream once it has answered its `disconnect`; a second one arriving
    then ends the adapter (docs/debugpy.md, 4). When the debugger detached itself and then closed its socket, the
    relay must not detach for it again."""
    debugger, near = socket.socketpair()
    upstream, adapter = socket.socketpair()
    relay = Relay(near, upstream, linger=30)
    threading.Thread(target=relay.run, daemon=True).start()
    debugger.sendall(_message(seq=7, type="request", command=command, arguments={"terminateDebuggee": False}))
    request = _read_message(adapter)
    assert (request["seq"], request["command"]) == (7, "disconnect")
    adapter.sendall(_message(seq=1, type="response", request_seq=7, success=True, command="disconnect"))
    assert _read_message(debugger)["request_seq"] == 7
    debugger.close()
    _up_done(relay)
    try:
        extra = adapter.recv(4096, socket.MSG_DONTWAIT | socket.MSG_PEEK)
    except BlockingIOError:
        extra = b""
    assert extra == b"", f"the relay sent the adapter more after the debugger's own detach: {extra!r}"
    adapter.close()  # the adapter ends the session: the relay closes
    deadline = time.monotonic() + 10
    while not relay.closed and time.monotonic() < deadline:
        time.sleep(0.005)
    assert relay.closed


def test_a_debugger_that_vanished_is_detached_for_once_its_requests_are_answered():
    debugger, near = socket.socketpair()
    upstream, adapter = socket.socketpair()
    relay = Relay(near, upstream, linger=30)
    threading.Thread(target=relay.run, daemon=True).start()
    debugger.sendall(_message(seq=3, type="request", command="threads"))
    assert _read_message(adapter)["command"] == "threads"
    debugger.close()  # gone with its request unanswered
    adapter.sendall(_message(seq=1, type="response", request_seq=3, success=True, command="threads"))
    detach = _read_message(adapter)
    assert detach["command"] == "disconnect" and detach["arguments"]["terminateDebuggee"] is False
    adapter.close()
