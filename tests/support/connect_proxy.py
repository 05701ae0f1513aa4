"""An HTTP CONNECT proxy (what corporate networks put between a laptop and a cluster's API server), strict enough
to refuse what a real one refuses: any method but CONNECT, an HTTP/1.1 request without Host (HTTP/1.0 needs
none: Python's http.client tunnels that way), and wrong credentials when it has some."""

from __future__ import annotations

import base64
import socket
import threading

from tests.support.net import close_listener, splice


class ConnectProxy:
    def __init__(self, credentials: tuple[str, str] | None = None):
        self.credentials = credentials
        self.tunnels: list[str] = []  # "host:port" of every tunnel opened
        self.refused: list[str] = []  # the status line of every refusal
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._socks.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _refuse(self, conn: socket.socket, status: str, extra: str = "") -> None:
        self.refused.append(status)
        conn.sendall(f"HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
        conn.close()

    def _serve(self, conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(1)  # byte by byte: nothing after the request is taken from the client
            if not chunk or len(head) > 65536:
                conn.close()
                return
            head += chunk
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        target, _, version = rest.rpartition(" ")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if method != "CONNECT":
            return self._refuse(conn, "405 Method Not Allowed")
        if version not in ("HTTP/1.0", "HTTP/1.1") or (version == "HTTP/1.1" and "host" not in headers):
            return self._refuse(conn, "400 Bad Request")
        if self.credentials:
            want = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
            if headers.get("proxy-authorization") != want:
                return self._refuse(conn, "407 Proxy Authentication Required",
                                    'Proxy-Authenticate: Basic realm="test"\r\n')
        host, _, port = target.rpartition(":")
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except (OSError, ValueError):
            return self._refuse(conn, "502 Bad Gateway")
        upstream.settimeout(None)
        with self._lock:
            self._socks.append(upstream)
        self.tunnels.append(target)
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        threading.Thread(target=splice, args=(upstream, conn), daemon=True).start()
        splice(conn, upstream)

    def close(self) -> None:
        close_listener(self._listener)
        with self._lock:
            for s in self._socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

