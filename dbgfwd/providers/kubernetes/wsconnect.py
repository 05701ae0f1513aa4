"""Open a websocket to a pod subresource (portforward, exec) with the client's auth, TLS and proxy.

Follows what `kubernetes.stream.ws_client.create_websocket` does with a Configuration (bearer token through the
refresh hook, CA/verify, client certificate, tls-server-name, proxy and its credentials, NO_PROXY), through
dbgfwd's own websocket client (dbgfwd/net/websocket.py), asks only for the v4 subprotocols dbgfwd implements
and turns handshake failures into dbgfwd errors.
"""

from __future__ import annotations

import base64
import functools
import os
import ssl
from urllib.parse import quote, urlencode, urlparse

from dbgfwd.errors import ExitCode, UpstreamError
from dbgfwd.net.websocket import HandshakeRefused, ProxyRefused, WebSocket, WebSocketError
from dbgfwd.providers.kubernetes.cluster import LOGIN_HINT, Cluster, bypasses_proxy, status_message

V4_BINARY = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"


def ws_url(cluster: Cluster, pod: str, subresource: str, query: list[tuple[str, str]]) -> str:
    host = cluster.configuration.host.rstrip("/")
    parsed = urlparse(host)
    scheme = "wss" if parsed.scheme == "https" else "ws"
    path = (f"{parsed.path}/api/v1/namespaces/{quote(cluster.ref.namespace, safe='')}/pods/"
            f"{quote(pod, safe='')}/{subresource}")
    return f"{scheme}://{parsed.netloc}{path}?{urlencode(query)}"


def _options(cluster: Cluster, url: str) -> dict:
    """WebSocket.connect's keyword arguments for `url` from the cluster's Configuration."""
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
    out: dict = {"headers": headers, "server_hostname": cfg.tls_server_name or None}
    if url.startswith("wss://"):
        verify = bool(cfg.verify_ssl)
        files = (cfg.ssl_ca_cert if verify else None, cfg.cert_file, cfg.key_file)
        try:
            out["tls"] = _tls_context(verify, cfg.assert_hostname, *files, _stamps(files))
        except (OSError, ValueError) as exc:
            raise UpstreamError(f"cannot use the TLS settings of kubeconfig context {cluster.ref.context or '-'}: "
                                f"{exc}", hint="check certificate-authority and client-certificate/client-key "
                                "in the kubeconfig", retryable=False) from None
    if cfg.proxy and not bypasses_proxy(cfg):
        proxy = urlparse(cfg.proxy)
        if proxy.scheme.lower() != "http":
            raise UpstreamError(f"the proxy {proxy.scheme}://{proxy.netloc.rpartition('@')[2]} is not an http:// "
                                "proxy: pod streams go through HTTP proxies only", retryable=False,
                                hint="use proxy-url: http://host:port (HTTPS_PROXY alike)")
        # Its user and password are in proxy_headers by now (cluster._proxy_credentials).
        auth = next((v for k, v in (cfg.proxy_headers or {}).items() if k.lower() == "proxy-authorization"), None)
        out["proxy"] = (proxy.hostname or "", proxy.port or 80, auth)
    return out


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
            timeout: float, what: str, rbac: str) -> WebSocket:
    """A connected websocket (thread-safe sends, one reader) speaking a v4 subprotocol.

    Raises UpstreamError: retryable for 404 (pod gone, a replacement may come), 5xx and network
    errors; not retryable for 401 (code AUTH), 403 (code AUTH, naming the RBAC verb) and 400.
    """
    url = ws_url(cluster, pod, subresource, query)
    options = _options(cluster, url)
    ref = cluster.ref
    try:
        ws = WebSocket.connect(url, timeout, subprotocols=(V4_BINARY, V4_BASE64), **options)
    except HandshakeRefused as exc:
        status = exc.status
        msg = status_message(exc.body)
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
    except ProxyRefused as exc:
        host, port, _ = options["proxy"]
        raise UpstreamError(f"cannot {what} pod {pod}: the proxy {host}:{port} refused the tunnel to {ref.server} "
                            f"({exc.status_line})", retryable=" 407 " not in f"{exc.status_line} ",
                            hint="check proxy-url (or HTTPS_PROXY) and its user and password") from None
    except WebSocketError as exc:
        raise UpstreamError(f"cannot {what} pod {pod} through {ref.server}: {exc}", retryable=True) from None
    if ws.subprotocol not in (V4_BINARY, V4_BASE64):
        ws.abort()
        raise UpstreamError(f"the API server chose websocket subprotocol {ws.subprotocol!r} for {what}; "
                            f"dbgfwd speaks {V4_BINARY}", retryable=False)
    return ws
