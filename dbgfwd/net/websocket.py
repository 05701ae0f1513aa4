"""A small RFC 6455 websocket client (binary/text messages, ping/pong, close) over TCP or TLS, optionally through
an HTTP proxy's CONNECT tunnel. The SSM data channel and the Kubernetes exec and port-forward streams use it.

Written here rather than borrowed so the callers control batching (many frames per `sendall`), keepalive pings
and the TLS connection (one context per cluster, and reads and writes from different threads: net/tls.py), and so
the upgrade's answer is read in a few large reads: websocket-client reads it one byte per recv call (170 calls,
a third of a readiness probe's CPU).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import socket
import ssl
import struct
import threading
from urllib.parse import urlsplit

from dbgfwd.net.tls import SerialTLS
from dbgfwd.net.wsframes import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameReader, close_frame, encode_frame  # noqa: F401

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 16 * 1024 * 1024
MAX_HEAD = 65536  # an upgrade (or proxy) answer's status line and headers
MAX_BODY = 65536  # of a refusal's body, kept for its message

_CLOSE_WAIT = 0.5  # seconds close() gives a send in progress, and its own close frame


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """One for every connection: loading the system's CA store takes 30-40 ms of CPU, and each rank's stream is a
    connection of its own."""
    return ssl.create_default_context()


# The last TLS session of each server, to resume: a probe or a stream is a new connection every time, and a resumed
# handshake skips the certificate chain's checks (with TLS 1.3 the server's ticket has come by the time the upgrade
# is answered). Keyed by the context too: a session is never offered under other TLS settings.
_sessions: dict[tuple, ssl.SSLSession] = {}
_sessions_lock = threading.Lock()  # probes connect from a pool of threads
_MAX_SESSIONS = 64


def _keep_session(key: tuple, session: ssl.SSLSession) -> None:
    with _sessions_lock:
        if key not in _sessions and len(_sessions) >= _MAX_SESSIONS:
            _sessions.pop(next(iter(_sessions)))
        _sessions[key] = session


class WebSocketError(OSError):
    """The websocket failed or was closed (by either side)."""


class HandshakeRefused(WebSocketError):
    """The server answered the upgrade with another status than 101 (`status_line` names the server; the body is
    kept for its message)."""

    def __init__(self, status: int, status_line: str, body: bytes):
        super().__init__(f"websocket upgrade refused by {status_line}")
        self.status, self.status_line, self.body = status, status_line, body


class ProxyRefused(WebSocketError):
    """The HTTP proxy did not open the tunnel (its status line, e.g. 407 Proxy Authentication Required)."""

    def __init__(self, status_line: str):
        super().__init__(f"the proxy refused the tunnel: {status_line}")
        self.status_line = status_line


class WebSocket:
    """A connected client websocket. `send*` are thread-safe; `recv` (or `reader`) belongs to one reader thread."""

    def __init__(self, sock, leftover: bytes = b"", subprotocol: str | None = None):
        self._sock = sock
        self.reader = FrameReader(sock.recv, self.pong, leftover, max_message=MAX_MESSAGE)
        self.lock = threading.Lock()  # every write; callers that frame their own writes take it too
        self.closed = False  # a close frame went out (or the connection broke): nothing more is sent
        self.subprotocol = subprotocol

    @property
    def sock(self):
        return self._sock

    @classmethod
    def connect(cls, url: str, timeout: float = 10.0, headers: dict[str, str] | list[str] | None = None,
                subprotocols: tuple[str, ...] = (), tls: ssl.SSLContext | None = None,
                server_hostname: str | None = None, proxy: tuple[str, int, str | None] | None = None,
                ) -> "WebSocket":
        """Open `url` (ws:// or wss://). `tls`: the context for wss (default: the system's CAs);
        `server_hostname`: the name the certificate must carry, when not the URL's host; `proxy`: (host, port,
        Proxy-Authorization value or None) of an HTTP proxy to tunnel through. Raises HandshakeRefused,
        ProxyRefused or WebSocketError."""
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss"):
            raise WebSocketError(f"not a websocket URL scheme: {parts.scheme!r}")
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        where = f"{proxy[0]}:{proxy[1]}" if proxy else f"{host}:{port}"
        try:
            raw = socket.create_connection(proxy[:2] if proxy else (host, port), timeout=timeout)
        except OSError as exc:
            raise WebSocketError(f"cannot reach {where}: {exc.strerror or exc}") from None
        sock = raw
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if proxy:
                _tunnel(raw, host, port, proxy[2])
            if parts.scheme == "wss":
                context = tls or _tls_context()
                name = server_hostname or host
                resume = (context, name, host, port, proxy[:2] if proxy else None)
                sock = context.wrap_socket(raw, server_hostname=name, session=_sessions.get(resume))
            key = base64.b64encode(os.urandom(16)).decode()
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}", "Upgrade: websocket",
                     "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
            if subprotocols:
                lines.append(f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}")
            extra = headers.items() if isinstance(headers, dict) else (h.split(":", 1) for h in headers or ())
            lines += [f"{k.strip()}: {v.strip()}" for k, v in extra]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            status_line, got, rest = _read_head(sock, "the websocket upgrade")
            status = status_line.split(" ", 2)
            if len(status) < 2 or status[1] != "101":
                code = int(status[1]) if len(status) > 1 and status[1].isdigit() else 0
                # Only the status line and the body: the URL's query (credentials) is never echoed.
                raise HandshakeRefused(code, f"{host}: {status_line.strip()}", _body(sock, got, rest))
            expect = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
            if got.get("sec-websocket-accept") != expect:
                raise WebSocketError("websocket upgrade answered with a wrong Sec-WebSocket-Accept")
            chosen = got.get("sec-websocket-protocol") or None  # the caller checks it is one it offered
            if isinstance(sock, ssl.SSLSocket) and sock.session is not None:
                _keep_session(resume, sock.session)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, (WebSocketError, KeyboardInterrupt, SystemExit)):
                raise
            if isinstance(exc, OSError):
                raise WebSocketError(f"websocket to {where} failed: {type(exc).__name__}: "
                                     f"{exc.strerror or exc}") from None
            raise
        sock.settimeout(None)
        if isinstance(sock, ssl.SSLSocket):  # one reader thread, several writers: see net/tls.py
            sock = SerialTLS(sock)
        return cls(sock, rest, chosen)

    # ---- sending ----
    def send_frames(self, frames: list[bytes]) -> None:
        """Send already-encoded frames (encode_frame) in one write."""
        with self.lock:
            if self.closed:
                raise WebSocketError("websocket is closed")
            try:
                self._sock.sendall(b"".join(frames))
            except OSError as exc:
                self.closed = True
                raise WebSocketError(f"websocket send failed: {exc}") from None

    def send_binary(self, payload: bytes) -> None:
        self.send_frames([encode_frame(OP_BINARY, payload)])

    def send_text(self, text: str) -> None:
        self.send_frames([encode_frame(OP_TEXT, text.encode())])

    def ping(self, payload: bytes = b"") -> None:
        self.send_frames([encode_frame(OP_PING, payload)])

    def pong(self, payload: bytes) -> None:
        try:
            self.send_frames([encode_frame(OP_PONG, payload)])
        except WebSocketError:
            pass

    # ---- receiving ----
    def has_buffered_frame(self) -> bool:
        """True when a complete frame is already buffered (recv() would not block)."""
        return self.reader.has_frame()

    def recv(self) -> tuple[int, bytes]:
        """Next data message as (opcode, payload). Answers pings; raises WebSocketError on close."""
        try:
            op, payload = self.reader.message()
        except (OSError, EOFError) as exc:
            raise WebSocketError(f"websocket receive failed: {exc}") from None
        if op == OP_CLOSE:
            self.send_close(frame=encode_frame(OP_CLOSE, payload[:2]))  # the peer's code back, once
            self.abort()
            code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
            raise WebSocketError(f"websocket closed by peer (code {code})")
        return op, payload

    # ---- ending ----
    def send_close(self, wait: float = _CLOSE_WAIT, frame: bytes | None = None) -> None:
        """A close frame (`frame`, else code 1000), once, if the send lock is free within `wait`: never wait behind
        a writer stuck on a dead peer (closing must always work; it is what unblocks that writer). The connection
        stays open for reading the peer's own close frame."""
        if not self.lock.acquire(timeout=wait):
            self.closed = True
            return
        try:
            if not self.closed:
                self.closed = True
                timeout = self._sock.gettimeout()
                try:
                    self._sock.settimeout(_CLOSE_WAIT)  # the close frame must not wait on a full buffer
                    self._sock.sendall(frame or close_frame())
                    self._sock.settimeout(timeout)
                except OSError:
                    pass
        finally:
            self.lock.release()

    def abort(self) -> None:
        """End the connection now, without a close frame; wakes a thread blocked reading or writing it."""
        self.closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def close(self, wait: float = _CLOSE_WAIT) -> None:
        """Say goodbye when the socket can take it, and end the connection within a second either way: a
        peer that stopped reading leaves a sender blocked in sendall holding the send lock (the close
        frame is skipped then, after `wait`, and the shutdown wakes that sender with an error). No waiting for
        the peer's own close frame."""
        self.send_close(wait)
        self.abort()


def _read_head(sock, what: str) -> tuple[str, dict[str, str], bytes]:
    """(status line, headers by lower-case name, the bytes after them) of an HTTP answer, in large reads."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise WebSocketError(f"the connection closed during {what}")
        data += chunk
        if len(data) > MAX_HEAD:
            raise WebSocketError(f"the answer to {what} is too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    got = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return status_line, got, rest


def _body(sock, headers: dict[str, str], rest: bytes) -> bytes:
    """A refusal's body (Content-Length's worth, up to MAX_BODY), for the message it carries; b"" when unsure."""
    try:
        length = min(int(headers.get("content-length", "0")), MAX_BODY)
    except ValueError:
        return rest[:MAX_BODY]
    body = rest
    try:
        while len(body) < length:
            chunk = sock.recv(length - len(body))
            if not chunk:
                break
            body += chunk
    except OSError:
        pass
    return body[:length]


def _tunnel(sock: socket.socket, host: str, port: int, authorization: str | None) -> None:
    """Ask the HTTP proxy at the other end of `sock` for a tunnel to host:port."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if authorization:
        lines.append(f"Proxy-Authorization: {authorization}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    status_line, _, rest = _read_head(sock, "the proxy's CONNECT")
    status = status_line.split(" ", 2)
    if len(status) < 2 or status[1] != "200":
        raise ProxyRefused(status_line.strip())
    if rest:
        raise WebSocketError("the proxy sent bytes before the tunnel was used")
