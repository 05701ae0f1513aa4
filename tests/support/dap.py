"""A small Debug Adapter Protocol client, speaking to debugpy the way VS Code does.

Sequence (see shared/PROTOCOLS.md): initialize -> attach -> (initialized event) -> setBreakpoints ->
configurationDone -> attach response -> stopped events.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any


class DapError(AssertionError):
    pass


class DapClient:
    def __init__(self, host: str, port: int, timeout: float = 30.0):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)  # a real client, not a probe
        self.sock.settimeout(timeout)
        self._buf = b""
        self._seq = 0
        self._lock = threading.Lock()
        self.events: list[dict] = []
        self.reverse_requests: list[dict] = []  # startDebugging, runInTerminal: answered with success
        self._responses: dict[int, dict] = {}

    # -- wire --
    def _send(self, msg: dict) -> None:
        body = json.dumps(msg).encode()
        self.sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def _read_message(self) -> dict:
        while b"\r\n\r\n" not in self._buf:
            self._recv_more()
        header, _, rest = self._buf.partition(b"\r\n\r\n")
        length = None
        for line in header.split(b"\r\n"):
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        if length is None:
            raise DapError(f"DAP header without Content-Length: {header!r}")
        while len(rest) < length:
            self._buf = header + b"\r\n\r\n" + rest
            self._recv_more()
            header, _, rest = self._buf.partition(b"\r\n\r\n")
        body, self._buf = rest[:length], rest[length:]
        return json.loads(body)

    def _recv_more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise DapError("connection closed by the debug adapter")
        self._buf += data

    def _pump_until(self, predicate, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for ev in self.events:
                if predicate(ev):
                    self.events.remove(ev)
                    return ev
            if time.monotonic() > deadline:
                raise DapError(f"timed out; events so far: {[e.get('event') for e in self.events]}")
            self._dispatch(self._read_message())

    def _dispatch(self, msg: dict) -> None:
        if msg.get("type") == "response":
            self._responses[msg["request_seq"]] = msg
        elif msg.get("type") == "request":
            # reverse requests (startDebugging, runInTerminal): answer success so the adapter goes on
            self.reverse_requests.append(msg)
            self._send({"type": "response", "seq": self._next(), "request_seq": msg["seq"],
                        "command": msg["command"], "success": True})
        else:
            self.events.append(msg)

    def _next(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    # -- requests --
    def send_request(self, command: str, arguments: dict | None = None) -> int:
        seq = self._next()
        msg: dict[str, Any] = {"type": "request", "seq": seq, "command": command}
        if arguments is not None:
            msg["arguments"] = arguments
        self._send(msg)
        return seq

    def wait_response(self, seq: int, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while seq not in self._responses:
            if time.monotonic() > deadline:
                raise DapError(f"no response to request {seq}")
            self._dispatch(self._read_message())
        resp = self._responses.pop(seq)
        return resp

    def request(self, command: str, arguments: dict | None = None, timeout: float | None = None) -> dict:
        resp = self.wait_response(self.send_request(command, arguments), timeout)
        if not resp.get("success"):
            raise DapError(f"{command} failed: {resp.get('message')} {resp.get('body')}")
        return resp

    def wait_event(self, name: str, timeout: float | None = None, **match) -> dict:
        def pred(ev):
            if ev.get("event") != name:
                return False
            body = ev.get("body") or {}
            return all(body.get(k) == v for k, v in match.items())
        return self._pump_until(pred, timeout)

    # -- the VS Code attach sequence --
    def attach(self, breakpoints: dict[str, list[int]], path_mappings: list[dict] | None = None,
               just_my_code: bool = False) -> dict:
        init = self.request("initialize", {
            "clientID": "vscode", "clientName": "dbgfwd-tests", "adapterID": "debugpy",
            "pathFormat": "path", "linesStartAt1": True, "columnsStartAt1": True,
            "supportsVariableType": True, "supportsRunInTerminalRequest": False,
            "supportsStartDebuggingRequest": True,
        })
        args: dict[str, Any] = {"justMyCode": just_my_code, "name": "dbgfwd-test", "type": "debugpy",
                                "request": "attach"}
        if path_mappings:
            args["pathMappings"] = path_mappings
        attach_seq = self.send_request("attach", args)
        self.wait_event("initialized")
        for path, lines in breakpoints.items():
            resp = self.request("setBreakpoints", {"source": {"path": path},
                                                   "breakpoints": [{"line": n} for n in lines]})
            self.breakpoints_response = resp
        self.request("setExceptionBreakpoints", {"filters": []})
        self.request("configurationDone")
        resp = self.wait_response(attach_seq)
        if not resp.get("success"):
            raise DapError(f"attach failed: {resp.get('message')}")
        return init

    def wait_reverse_request(self, command: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while not any(r["command"] == command for r in self.reverse_requests):
            if time.monotonic() > deadline:
                raise DapError(f"timed out waiting for a {command} request")
            self._dispatch(self._read_message())
        return next(r for r in self.reverse_requests if r["command"] == command)

    def wait_stopped(self, timeout: float | None = None) -> dict:
        return self.wait_event("stopped", timeout)

    def top_frame(self, thread_id: int) -> dict:
        frames = self.request("stackTrace", {"threadId": thread_id, "startFrame": 0, "levels": 1})
        return frames["body"]["stackFrames"][0]

    def evaluate(self, expression: str, frame_id: int | None = None) -> str:
        args: dict[str, Any] = {"expression": expression, "context": "repl"}
        if frame_id is not None:
            args["frameId"] = frame_id
        return self.request("evaluate", args)["body"]["result"]

    def continue_(self, thread_id: int) -> None:
        self.request("continue", {"threadId": thread_id})

    def disconnect(self) -> None:
        try:
            self.request("disconnect", {"restart": False, "terminateDebuggee": False}, timeout=10)
        except (DapError, OSError):
            pass
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def assert_session_ends(client: DapClient, timeout: float = 30.0) -> None:
    """The debug session through `client` has ended: its connection closes (a reset counts), or the adapter
    answers that its debuggee is gone. A request that is merely not answered is a hang, and fails this."""
    try:
        client.request("threads", timeout=timeout)
    except DapError as exc:
        if "connection closed" in str(exc) or "disconnected" in str(exc):
            return
        raise AssertionError(f"the session did not end, it stopped answering: {exc}") from None
    except (ConnectionResetError, BrokenPipeError):
        return
    except TimeoutError:
        raise AssertionError(f"the session did not end within {timeout:g}s, it went silent") from None
    raise AssertionError("the session still answers: it did not end")


def debug_round(host: str, port: int, source: str, line: int, expression: str,
                path_mappings: list[dict] | None = None, timeout: float = 60.0) -> str:
    """Attach, break at `source:line`, evaluate `expression` in the stopped frame, continue, disconnect.

    Returns the evaluated value. This is the full VS Code exchange every forward path must carry.
    """
    client = DapClient(host, port, timeout=timeout)
    try:
        client.attach({source: [line]}, path_mappings=path_mappings)
        stopped = client.wait_stopped(timeout)
        thread_id = stopped["body"]["threadId"]
        frame = client.top_frame(thread_id)
        value = client.evaluate(expression, frame["id"])
        client.continue_(thread_id)
        return value
    finally:
        client.disconnect()


class ExtensionJobSession:
    """What VS Code's Python debugger extension does with a "dbgfwd: job" session: the DAP handshake with the
    job session, then, for every `debugpyAttach` event, a child session started with the event's body as its
    attach configuration (childProcessAttachService: connect to body.connect, the body's pathMappings)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 60.0):
        self.parent = DapClient(host, port, timeout=timeout)
        self.parent.attach({})
        self.announced: list[dict] = []  # every debugpyAttach body, in order

    def next_attach(self, timeout: float = 60.0) -> dict:
        body = self.parent.wait_event("debugpyAttach", timeout)["body"]
        self.announced.append(body)
        return body

    def child(self, body: dict, breakpoints: dict[str, list[int]], timeout: float = 60.0) -> DapClient:
        client = DapClient(body["connect"]["host"], int(body["connect"]["port"]), timeout=timeout)
        client.attach(breakpoints, path_mappings=body.get("pathMappings"), just_my_code=body.get("justMyCode", True))
        return client

    def console(self) -> list[str]:
        """Debug Console lines received so far."""
        return [e["body"]["output"].rstrip("\n") for e in self.parent.events if e.get("event") == "output"]

    def sync(self) -> None:
        """A round trip: everything the job session sent before its answer has been read."""
        self.parent.request("threads")

    def close(self) -> None:
        self.parent.disconnect()
