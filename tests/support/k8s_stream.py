"""portforward and exec websocket endpoints of the test apiserver (kubelet behaviour, v4 channels)."""

from __future__ import annotations

import base64
import json
import ssl
import struct
import threading

from dbgfwd.net.tls import SerialTLS

from tests.support import k8s_ws
from tests.support.k8s_ws import OP_BINARY, OP_CLOSE, OP_TEXT, ServerWebSocket

V4 = "v4.channel.k8s.io"
V4_B64 = "v4.base64.channel.k8s.io"
SUPPORTED = (V4, V4_B64)


def _fail(handler, code: int, message: str) -> None:
    from tests.support.k8s_server import ApiFailure

    raise ApiFailure(code, "BadRequest", message)


def _upgrade(handler) -> tuple[ServerWebSocket, bool]:
    """Validate and complete the websocket handshake; returns (ws, base64?)."""
    problem = k8s_ws.handshake_problem(handler.headers)
    if problem:
        _fail(handler, 400, problem)
    offered = [p.strip() for p in (handler.headers.get("Sec-WebSocket-Protocol") or "").split(",") if p.strip()]
    chosen = next((p for p in offered if p in SUPPORTED), None)
    if getattr(handler.srv, "prefer_base64", False) and V4_B64 in offered:
        chosen = V4_B64  # servers may pick any offered protocol; tests use this to cover base64
    if chosen is None:
        _fail(handler, 400, f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
                            f"server supports {list(SUPPORTED)}")
    handler.send_response_only(101, "Switching Protocols")
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", k8s_ws.accept_key(handler.headers["Sec-WebSocket-Key"]))
    handler.send_header("Sec-WebSocket-Protocol", chosen)
    handler.end_headers()
    handler.wfile.flush()
    handler.close_connection = True
    conn = handler.connection
    if isinstance(conn, ssl.SSLSocket):
        # Read in this thread, written from the pod's: OpenSSL takes one call at a time (dbgfwd/net/tls.py).
        tls = SerialTLS(conn)
        return ServerWebSocket(tls, _TLSReader(tls)), chosen == V4_B64
    return ServerWebSocket(conn, handler.rfile), chosen == V4_B64


class _TLSReader:
    def __init__(self, tls) -> None:
        self.read = tls.recv


def _send(ws: ServerWebSocket, b64: bool, channel: int, data: bytes) -> None:
    if b64:
        ws.send(bytes([0x30 + channel]) + base64.b64encode(data), OP_TEXT)
    else:
        ws.send(bytes([channel]) + data, OP_BINARY)


def _decode(b64: bool, opcode: int, msg: bytes) -> tuple[int, bytes] | None:
    """(channel, payload) of a client message; None when it breaks the subprotocol."""
    if not msg or opcode != (OP_TEXT if b64 else OP_BINARY):
        return None
    if b64:
        try:
            return msg[0] - 0x30, base64.b64decode(msg[1:], validate=True)
        except ValueError:
            return None
    return msg[0], msg[1:]


def portforward(handler, pod, multi: dict) -> None:
    srv = handler.srv
    raw = [p for v in multi.get("ports", []) for p in v.split(",")]
    if not raw or raw == [""]:
        _fail(handler, 400, 'query parameter "port" is required')
    ports = []
    for text in raw:  # strconv.ParseUint(text, 10, 16): digits only, no sign, blank or underscore
        if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
            _fail(handler, 400, f'unable to parse "{text}" as a port: invalid port')
        ports.append(int(text))
    ws, b64 = _upgrade(handler)
    with srv.cond:
        srv.streams.append(ws)
        srv.stats.portforward[pod.name] = srv.stats.portforward.get(pod.name, 0) + 1
    for i, port in enumerate(ports):
        _send(ws, b64, 2 * i, struct.pack("<H", port))
        _send(ws, b64, 2 * i + 1, struct.pack("<H", port))
    conns = []
    uid = pod.obj["metadata"]["uid"]
    for i, port in enumerate(ports):
        try:
            conns.append(pod.runtime.dial(port))
        except OSError as exc:
            reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else str(exc)
            text = (f"error forwarding port {port} to pod {pod.name}, uid {uid}: failed to connect to "
                    f"localhost:{port} inside namespace \"{pod.runtime.netns}\": {reason}")
            try:
                _send(ws, b64, 2 * i + 1, text.encode())
            except OSError:
                pass
            ws.close()
            for c in conns:
                c.close()
            return _forget(srv, ws)

    def pod_to_client(i: int, sock) -> None:
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                _send(ws, b64, 2 * i, data)
        except OSError:
            pass
        ws.close()  # pod side closed: the websocket closes (no half-close in the protocol)

    threads = [threading.Thread(target=pod_to_client, args=(i, s), daemon=True) for i, s in enumerate(conns)]
    for t in threads:
        t.start()
    try:
        while True:
            opcode, msg = ws.recv_message()
            if opcode == OP_CLOSE:
                break
            decoded = _decode(b64, opcode, msg)
            if decoded is None or decoded[0] % 2 or decoded[0] // 2 >= len(conns):
                srv.stats.violations.append(f"portforward: bad client message {msg[:8]!r}")
                ws.close(1002, "bad channel message")
                break
            conns[decoded[0] // 2].sendall(decoded[1])
    except OSError:
        pass
    finally:
        if ws.violation:
            srv.stats.violations.append(ws.violation)
        srv.stats.pings += ws.pings_received
        for c in conns:
            try:
                c.shutdown(2)
            except OSError:
                pass
            c.close()
        ws.close()
        for t in threads:
            t.join(5)
        _forget(srv, ws)


def _forget(srv, ws) -> None:
    with srv.cond:
        if ws in srv.streams:
            srv.streams.remove(ws)


def exec_(handler, pod, multi: dict) -> None:
    srv = handler.srv
    command = multi.get("command") or []
    if not command:
        _fail(handler, 400, "you must specify at least 1 command")
    flags = {k: (multi.get(k, ["false"])[-1] in ("true", "1")) for k in ("stdin", "stdout", "stderr", "tty")}
    if flags.pop("tty") and flags["stderr"]:
        _fail(handler, 400, "tty and stderr cannot both be true")
    if not any(flags.values()):
        _fail(handler, 400, "you must specify at least one of stdin, stdout, stderr")
    containers = [c["name"] for c in pod.obj["spec"]["containers"]]
    wanted = (multi.get("container") or [""])[-1]
    if wanted and wanted not in containers:
        _fail(handler, 400, f"container {wanted} is not valid for pod {pod.name}")
    if not wanted and len(containers) > 1:  # the API server picks no default; kubectl does, client-side
        _fail(handler, 400, f"a container name must be specified for pod {pod.name}, choose one of: "
                            f"[{' '.join(containers)}]")
    srv.stats.exec_containers.append(wanted or containers[0])
    ws, b64 = _upgrade(handler)
    srv.stats.exec[pod.name] = srv.stats.exec.get(pod.name, 0) + 1
    try:
        proc = pod.runtime.exec(command, stdin=flags["stdin"])
    except OSError as exc:
        _send(ws, b64, 3, json.dumps({"metadata": {}, "status": "Failure", "reason": "InternalError",
                                      "message": f"exec failed: {exc}"}).encode())
        ws.close()
        return

    def pump(stream, channel: int, enabled: bool) -> None:
        for chunk in iter(lambda: stream.read1(65536), b""):
            if enabled:
                try:
                    _send(ws, b64, channel, chunk)
                except OSError:
                    pass

    threads = [threading.Thread(target=pump, args=(proc.stdout, 1, flags["stdout"]), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, 2, flags["stderr"]), daemon=True)]
    for t in threads:
        t.start()
    if flags["stdin"]:
        threading.Thread(target=_stdin_pump, args=(ws, b64, proc), daemon=True).start()
    code = proc.wait()
    for t in threads:
        t.join(10)
    if code == 0:
        status = {"metadata": {}, "status": "Success"}
    else:
        status = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                  "message": f"command terminated with non-zero exit code: error executing command "
                             f"{command}, exit code {code}",
                  "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
    try:
        _send(ws, b64, 3, json.dumps(status).encode())
    except OSError:
        pass
    ws.close()


def _stdin_pump(ws, b64, proc) -> None:
    while True:
        opcode, msg = ws.recv_message()
        if opcode == OP_CLOSE:
            break
        decoded = _decode(b64, opcode, msg)
        if decoded and decoded[0] == 0:
            try:
                proc.stdin.write(decoded[1])
                proc.stdin.flush()
            except OSError:
                break
    try:
        proc.stdin.close()
    except OSError:
        pass
