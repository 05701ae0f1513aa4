"""Open a websocket to a pod subresource (portforward, exec) with the client's auth, TLS and proxy.

Follows what `kubernetes.stream.ws_client.create_websocket` does with a Configuration (bearer token
through the refresh hook, CA/verify, client cert, tls-server-name, proxy), but asks only for the
v4 subprotocols dbgfwd implements and turns handshake failures into dbgfwd errors.
"""

from __future__ import annotations

import base64
import functools
import os
import ssl
from urllib.parse import quote, unquote, urlencode, urlparse

from dbgfwd.errors import ExitCode, UpstreamError
from dbgfwd.net.tls import SerialTLS
from dbgfwd.net.wsframes import close_frame
from dbgfwd.providers.kubernetes.cluster import LOGIN_HINT, Cluster, status_message

V4_BINARY = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"


def ws_url(cluster: Cluster, pod: str, subresource: str, query: list[tuple[str, str]]) -> str:
    host = cluster.configuration.host.rstrip("/")
    parsed = urlparse(host)
    scheme = "wss" if parsed.scheme == "https" else "ws"
    path = (f"{parsed.path}/api/v1/namespaces/{quote(cluster.ref.namespace, safe='')}/pods/"
            f"{quote(pod, safe='')}/{subresource}")
    return f"{scheme}://{parsed.netloc}{path}?{urlencode(query)}"


def _options(cluster: Cluster, url: str) -> tuple[dict, dict]:
    cfg = cluster.configuration
    headers = []
    # auth_settings() runs the refresh hook (exec plugins, OIDC) before handing out the token. It may also renew
    # the client certificate files, so the TLS settings are read after it.
    for auth in cfg.auth_settings().values():
        if auth.get("in") == "header" and auth.get("value"):
            headers.append(f"{auth['key']}: {auth['value']}")
    if cfg.username and cfg.password and not headers:
        raw = base64.b64encode(f"{cfg.username}:{cfg.password}".encode()).decode()
        headers.append(f"authorization: Basic {raw}")
    sslopt: dict = {}
    if url.startswith("wss://"):
        verify = bool(cfg.verify_ssl)
        files = (cfg.ssl_ca_cert if verify else None, cfg.cert_file, cfg.key_file)
        try:
            sslopt["context"] = _tls_context(verify, cfg.assert_hostname, *files, _stamps(files))
        except (OSError, ValueError) as exc:
            raise UpstreamError(f"cannot use the TLS settings of kubeconfig context {cluster.ref.context or '-'}: "
                                f"{exc}", hint="check certificate-authority and client-certificate/client-key "
                                "in the kubeconfig", retryable=False) from None
    if cfg.tls_server_name:
        sslopt["server_hostname"] = cfg.tls_server_name
    connect: dict = {"header": headers}
    if cfg.proxy:
        proxy = urlparse(cfg.proxy)
        connect.update(http_proxy_host=proxy.hostname, http_proxy_port=proxy.port,
                       proxy_type="http")
        if proxy.username:
            connect["http_proxy_auth"] = (unquote(proxy.username), unquote(proxy.password or ""))
        if cfg.no_proxy:
            connect["http_no_proxy"] = [h.strip() for h in cfg.no_proxy.split(",") if h.strip()]
    for key, value in (cfg.proxy_headers or {}).items():
        if key.lower() == "proxy-authorization" and value.startswith("Basic "):
            user, _, pw = base64.b64decode(value.split()[1]).decode().partition(":")
            connect["http_proxy_auth"] = (user, pw)
    return sslopt, connect


def _stamps(files) -> tuple:
    """When each file last changed: a rotated client certificate or CA gives a new context."""
    out = []
    for path in files:
        try:
            out.append(os.stat(path).st_mtime_ns if path else None)
        except OSError:
            out.append(None)
    return tuple(out)


@functools.lru_cache(maxsize=8)
def _tls_context(verify: bool, check_hostname, ca_file, cert_file, key_file, stamps) -> ssl.SSLContext:
    """One context for every websocket of a cluster, as websocket-client would build it for each: building one
    reads the CA bundle (30 ms of CPU with certifi's), and every probe and port-forward is a new connection."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog:
        ctx.keylog_filename = keylog
    if verify:
        if ca_file is None:
            import certifi

            ca_file = certifi.where()
        ctx.load_verify_locations(cafile=ca_file)
        ctx.check_hostname = True if check_hostname is None else bool(check_hostname)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def open_ws(cluster: Cluster, pod: str, subresource: str, query: list[tuple[str, str]],
            timeout: float, what: str, rbac: str):
    """A connected `websocket.WebSocket` (blocking, multithread-safe sends) speaking a v4 subprotocol.

    Raises UpstreamError: retryable for 404 (pod gone, a replacement may come), 5xx and network
    errors; not retryable for 401 (code AUTH), 403 (code AUTH, naming the RBAC verb) and 400.
    """
    import websocket

    url = ws_url(cluster, pod, subresource, query)
    sslopt, connect = _options(cluster, url)
    ws = websocket.WebSocket(sslopt=sslopt, skip_utf8_validation=True, enable_multithread=True)
    ref = cluster.ref
    try:
        ws.connect(url, subprotocols=[V4_BINARY, V4_BASE64], timeout=timeout, **connect)
    except websocket.WebSocketBadStatusException as exc:
        status = exc.status_code
        msg = status_message(exc.resp_body)
        if status == 401:
            raise UpstreamError(f"{ref.server} rejected the credentials of context {ref.context or '-'} "
                                f"(401 Unauthorized): the token has expired or is invalid",
                                hint=LOGIN_HINT, retryable=False, code=ExitCode.AUTH) from None
        if status == 403:
            raise UpstreamError(f"forbidden to {what} pod {pod} in namespace {ref.namespace}: "
                                f"{msg or '403 Forbidden'}",
                                hint=f"ask a cluster admin for RBAC {rbac} in namespace {ref.namespace}",
                                retryable=False, code=ExitCode.AUTH) from None
        if status == 404:
            raise UpstreamError(f"pod {pod} is gone from namespace {ref.namespace} ({msg or '404'})",
                                hint="waiting for its replacement", retryable=True) from None
        if status == 400:
            raise UpstreamError(f"the API server refused to {what} pod {pod}: {msg or '400 Bad Request'}",
                                retryable=False) from None
        raise UpstreamError(f"{what} pod {pod}: HTTP {status} {msg}".rstrip(), retryable=True) from None
    except (websocket.WebSocketException, OSError) as exc:
        ws.shutdown()
        raise UpstreamError(f"cannot {what} pod {pod} through {ref.server}: "
                            f"{type(exc).__name__}: {_safe(exc)}", retryable=True) from None
    if ws.subprotocol not in (V4_BINARY, V4_BASE64):
        ws.shutdown()
        raise UpstreamError(f"the API server chose websocket subprotocol {ws.subprotocol!r} for {what}; "
                            f"dbgfwd speaks {V4_BINARY}", retryable=False)
    if isinstance(ws.sock, ssl.SSLSocket):  # read by the engine while other threads write: see net/tls.py
        ws.sock = SerialTLS(ws.sock)
    ws.settimeout(None)
    return ws


def send_close_frame(ws, wait: float = 0.2) -> None:
    """A close frame if websocket-client's send lock is free within `wait`: never wait behind a writer stuck on a
    dead peer (closing must always work, it is what unblocks that writer)."""
    if not ws.lock.acquire(timeout=wait):
        return
    try:
        if ws.sock is not None:
            ws.sock.sendall(close_frame())
    except OSError:
        pass
    finally:
        ws.lock.release()


def _safe(exc: BaseException) -> str:
    # websocket-client messages can carry response headers; keep the first line, which never holds
    # our request's Authorization header.
    return str(exc).splitlines()[0][:200] if str(exc) else ""
