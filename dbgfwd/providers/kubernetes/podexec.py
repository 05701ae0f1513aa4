"""Run a command in a pod through the exec websocket (v4: 1 stdout, 2 stderr, 3 status JSON).

Used only for out-of-band readiness (rank markers, /proc/net/tcp), never to touch a debug port.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

from dbgfwd.errors import UpstreamError
from dbgfwd.net import wsframes as frames
from dbgfwd.net.poll import readable
from dbgfwd.providers.kubernetes.cluster import Cluster
from dbgfwd.net.websocket import WebSocketError
from dbgfwd.providers.kubernetes.wsconnect import V4_BASE64, open_ws

STDOUT, STDERR, STATUS = 1, 2, 3
MAX_OUTPUT = 4 * 1024 * 1024


@dataclass(frozen=True)
class ExecResult:
    stdout: str
    stderr: str
    status: dict  # the Status object from channel 3 ({} when the server sent none)

    @property
    def ok(self) -> bool:
        return self.status.get("status") == "Success"

    @property
    def exit_code(self) -> int | None:
        if self.ok:
            return 0
        for cause in (self.status.get("details") or {}).get("causes") or ():
            if cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message"))
                except (TypeError, ValueError):
                    return None
        return None


def run(cluster: Cluster, pod: str, container: str | None, command: list[str],
        timeout: float = 10.0, stdin: bytes | None = None) -> ExecResult:
    """Run `command` (argv, no shell unless you pass one) and collect its output; `stdin` is sent on channel 0
    (v4 cannot close it: the command must know how much to read).

    Raises UpstreamError as `wsconnect.open_ws` does, and (retryable) on timeout.
    """
    query = [("command", c) for c in command] + [("stdout", "true"), ("stderr", "true")]
    if stdin:
        query.append(("stdin", "true"))
    if container:
        query.append(("container", container))
    ws = open_ws(cluster, pod, "exec", query, timeout, "exec into", "`create` (and `get`) on pods/exec")
    b64 = ws.subprotocol == V4_BASE64
    out = {STDOUT: bytearray(), STDERR: bytearray(), STATUS: bytearray()}
    deadline = time.monotonic() + timeout
    reader = ws.reader  # large buffered reads (a probe's output comes in dozens of frames)
    try:
        if stdin:
            _send_stdin(ws, b64, stdin)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UpstreamError(f"exec in pod {pod} did not finish within {timeout:.0f}s", retryable=True)
            sock = ws.sock
            if not reader.has_frame() and not (hasattr(sock, "pending") and sock.pending()):
                if not readable(sock, left):
                    continue
            try:
                opcode, data = reader.message()
            except (OSError, EOFError, ValueError):
                break
            if opcode == frames.OP_CLOSE:
                break
            if not data:
                continue
            channel, payload = (data[0] - 0x30, base64.b64decode(data[1:])) if b64 else (data[0], data[1:])
            if channel in out and len(out[channel]) < MAX_OUTPUT:
                out[channel] += payload
    finally:
        ws.close(0.2)  # the command is over, or given up on: no waiting for the server's close frame
    try:
        status = json.loads(bytes(out[STATUS]) or b"{}")
    except ValueError:
        status = {"status": "Failure", "message": bytes(out[STATUS]).decode("utf-8", "replace")}
    return ExecResult(out[STDOUT].decode("utf-8", "replace"), out[STDERR].decode("utf-8", "replace"),
                      status if isinstance(status, dict) else {})


STDIN_CHUNK = 32 * 1024


def _send_stdin(ws, b64: bool, data: bytes) -> None:
    """`data` on channel 0, in frames of at most STDIN_CHUNK bytes."""
    for i in range(0, len(data), STDIN_CHUNK):
        chunk = data[i:i + STDIN_CHUNK]
        frame = (frames.encode_frame(frames.OP_TEXT, b"0" + base64.b64encode(chunk)) if b64
                 else frames.encode_frame(frames.OP_BINARY, b"\x00" + chunk))
        try:
            ws.send_frames([frame])
        except WebSocketError as exc:
            raise UpstreamError(f"exec: sending input failed ({exc})", retryable=True) from None
