"""The pod websockets (exec, port-forward) over TLS, as every real API server serves them.

The test server's other tests speak plain HTTP; here it serves HTTPS with a certificate of its own CA, which the
kubeconfig carries as certificate-authority-data, as clusters' kubeconfigs do."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import pytest

from dbgfwd.errors import UnreachableError, UpstreamError
from dbgfwd.providers.base import ProviderConfig
from dbgfwd.providers.kubernetes import KubernetesProvider, wsconnect
from tests.support import cli, k8s_jobs, ranks
from tests.support.dap import debug_round

ENV = k8s_jobs.ENV


def provider(srv, *targets, **options):
    options.setdefault("kubeconfig", str(srv.kubeconfig_path))
    return KubernetesProvider(ProviderConfig(targets=targets, options=options, base_port=5678))


def test_streams_read_and_written_at_once_over_tls_stay_whole(k8s_tls):
    # The engine reads a stream while the debugger's bytes are written to it and the monitor pings it: three
    # threads on one TLS connection. Unserialised, OpenSSL broke such a connection within seconds here.
    pod = k8s_jobs.echo_pod(k8s_tls, "echo-0")
    p = provider(k8s_tls, "echo-0")
    target = p.discover().targets[0]
    k8s_jobs.wait_listening(pod, 7000)
    wsconnect._tls_context.cache_clear()
    stream = p.open_stream(target, 7000, 10)
    payload = os.urandom(4_000_000)
    got = bytearray()
    done = threading.Event()
    errors: list[BaseException] = []

    def read():
        try:
            while len(got) < len(payload):
                data = stream.recv(65536)
                if not data:
                    break
                got.extend(data)
        except BaseException as exc:
            errors.append(exc)
        done.set()

    def write():
        try:
            for i in range(0, len(payload), 3000):
                stream.sendall(payload[i:i + 3000])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read), threading.Thread(target=write)]
    for t in threads:
        t.start()
    while not done.wait(0.005):
        p.keepalive()  # pings from a third thread, as the monitor sends them
    for t in threads:
        t.join(30)
    # A ping gives up after 50 ms behind a writer (the monitor never waits on a busy stream), and the writer may
    # have held the lock for every one of those; this one, on the idle stream, goes out.
    p.keepalive()
    assert not errors
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    resumed = k8s_tls.httpd.tls_resumed
    for _ in range(3):  # readiness probes: exec websockets, each a new TLS connection, resuming the last session
        assert p.probe(target) is not None
    assert k8s_tls.httpd.tls_resumed - resumed == 3
    stream.close()
    cli.wait_for(lambda: k8s_tls.stats.pings >= 1, 10, "the pings to reach the server")  # counted at the end
    stream = p.open_stream(target, 7000, 10)
    stream.close()
    assert k8s_tls.stats.violations == []
    info = wsconnect._tls_context.cache_info()
    assert (info.misses, info.hits) == (1, 4)  # one context for every connection of the cluster
    p.close()


def test_a_renewed_ca_file_gives_a_new_context_and_a_bad_one_a_clear_error(k8s_tls, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_bytes(k8s_tls.pki.ca.read_bytes())
    config = json.loads(k8s_tls.kubeconfig_path.read_text())
    config["clusters"][0]["cluster"] = {"server": k8s_tls.url, "certificate-authority": str(ca)}
    k8s_tls.kubeconfig_path.write_text(json.dumps(config))
    k8s_jobs.echo_pod(k8s_tls, "echo-0")
    p = provider(k8s_tls, "echo-0")
    target = p.discover().targets[0]
    wsconnect._tls_context.cache_clear()
    assert p.probe(target) is not None
    assert p.probe(target) is not None
    assert wsconnect._tls_context.cache_info().misses == 1
    os.utime(ca, ns=(0, os.stat(ca).st_mtime_ns + 10**9))  # rewritten (a renewed CA bundle)
    assert p.probe(target) is not None
    assert wsconnect._tls_context.cache_info().misses == 2
    ca.write_text("not a certificate\n")
    os.utime(ca, ns=(0, os.stat(ca).st_mtime_ns + 2 * 10**9))
    with pytest.raises(UpstreamError) as exc:
        p.open_stream(target, 7000, 10)
    assert "cannot use the TLS settings of kubeconfig context" in exc.value.message
    assert not exc.value.retryable and "certificate-authority" in exc.value.hint
    p.close()


def test_attach_and_debug_through_an_https_api_server(k8s_tls, tmp_path, port_block):
    # The whole path users have: discovery and watch over HTTPS, readiness through exec, a real DAP exchange
    # (initialize, attach, setBreakpoints, configurationDone, a breakpoint hit, an evaluate) through port-forward.
    program = k8s_jobs.pytorchjob(k8s_tls, "x", "ml", workers=1, ranks_per_pod=2)
    # Every rank started before the attach: its layout comes from the markers, and an attach that finds one pod's
    # ranks before the other's has started plans those first (and `wait` is satisfied by them).
    cli.wait_for(lambda: all(k8s_jobs.rank_markers(p) == 2 for p in k8s_tls.pods.values()), 60,
                 "every pod's two rank markers")
    ws = tmp_path / "ws"
    ws.mkdir()
    base = port_block(4)
    bg = k8s_jobs.attach(k8s_tls, ws, tmp_path, "pytorchjob/x", "-n", "ml", "--local-base-port", str(base))
    try:
        cli.wait_ready(ws, 90, bg=bg)
        ports = cli.launch_ports(ws / ".vscode" / "launch.json")
        assert ports == {r: base + r for r in range(4)}
        for rank, port in sorted(ports.items()):
            assert debug_round("127.0.0.1", port, str(program), ranks.BREAK_LINE, "rank") == str(rank)
    finally:
        code = bg.stop()
    assert code == 130, bg.output()[-2000:]
    assert k8s_tls.token not in bg.output()
    assert k8s_tls.stats.violations == []


def _through_proxy(srv, proxy_url: str) -> None:
    config = json.loads(srv.kubeconfig_path.read_text())
    config["clusters"][0]["cluster"]["proxy-url"] = proxy_url
    srv.kubeconfig_path.write_text(json.dumps(config))


def _probe_and_echo(srv) -> None:
    """Discovery, a readiness probe and a port-forward round trip to an echo pod: one of each kind of call."""
    pod = k8s_jobs.echo_pod(srv, "echo-0")
    p = provider(srv, "echo-0")
    target = p.discover().targets[0]
    k8s_jobs.wait_listening(pod, 7000)
    assert p.probe(target) is not None
    stream = p.open_stream(target, 7000, 10)
    stream.sendall(b"through the proxy")
    assert stream.recv(100) == b"through the proxy"
    stream.close()
    p.close()


def test_everything_goes_through_the_kubeconfigs_proxy(k8s_tls):
    # proxy-url in the kubeconfig (corporate networks): the API calls, the exec probes and the port-forwards all go
    # through the proxy's CONNECT tunnels, TLS inside them.
    from tests.support.connect_proxy import ConnectProxy

    proxy = ConnectProxy()
    try:
        _through_proxy(k8s_tls, proxy.url)
        _probe_and_echo(k8s_tls)
        api = f"127.0.0.1:{k8s_tls.port}"
        assert len(proxy.tunnels) >= 3 and set(proxy.tunnels) == {api}
        assert k8s_tls.stats.exec == {"echo-0": 1} and k8s_tls.stats.portforward == {"echo-0": 1}
    finally:
        proxy.close()


def test_a_proxy_that_wants_credentials_gets_them_from_the_proxy_url(k8s_tls):
    # kubectl authenticates with the user and password of proxy-url; the kubernetes client alone sent none (407).
    from tests.support.connect_proxy import ConnectProxy

    proxy = ConnectProxy(credentials=("dev@corp", "s3cr:t"))
    try:
        _through_proxy(k8s_tls, f"http://dev%40corp:s3cr%3At@127.0.0.1:{proxy.port}")
        _probe_and_echo(k8s_tls)
        assert proxy.refused == [] and len(proxy.tunnels) >= 3

        _through_proxy(k8s_tls, f"http://dev%40corp:wrong@127.0.0.1:{proxy.port}")
        with pytest.raises(UnreachableError) as exc:
            provider(k8s_tls, "echo-0").discover()
        assert exc.value.message == (f"cannot reach {k8s_tls.url} through the proxy 127.0.0.1:{proxy.port}: "
                                     "Tunnel connection failed: 407 Proxy Authentication Required")
        assert "proxy-url" in exc.value.hint and "wrong" not in exc.value.message + exc.value.hint
    finally:
        proxy.close()


def test_the_environments_https_proxy_and_no_proxy_are_followed(k8s_tls, monkeypatch):
    # As kubectl: HTTPS_PROXY when the kubeconfig names none, and NO_PROXY's hosts bypass it, for the API calls
    # and the websockets alike.
    from tests.support.connect_proxy import ConnectProxy

    proxy = ConnectProxy()
    try:
        pod = k8s_jobs.echo_pod(k8s_tls, "echo-0")
        k8s_jobs.wait_listening(pod, 7000)
        for no_proxy, through in (("", True), ("localhost,127.0.0.1", False)):
            for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
                monkeypatch.delenv(name, raising=False)
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)
            if no_proxy:
                monkeypatch.setenv("NO_PROXY", no_proxy)
            before = len(proxy.tunnels)
            p = provider(k8s_tls, "echo-0")
            target = p.discover().targets[0]
            assert p.probe(target) is not None
            p.open_stream(target, 7000, 10).close()
            p.close()
            assert (len(proxy.tunnels) - before >= 3) if through else (len(proxy.tunnels) == before), no_proxy
    finally:
        proxy.close()


def test_a_socks_proxy_is_refused_in_one_line_unless_no_proxy_bypasses_it(k8s_tls, monkeypatch, tmp_path):
    _through_proxy(k8s_tls, "socks5://me:pw@127.0.0.1:1080")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    res = cli.run("ls", "echo-0", "--kubeconfig", str(k8s_tls.kubeconfig_path), env=ENV)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "dbgfwd: error: the kubeconfig's proxy socks5://127.0.0.1:1080 is a SOCKS proxy, which dbgfwd does not "
        "support yet; use an HTTP proxy (proxy-url: http://host:port), or forward the API server's port (ssh -L) "
        "and point the kubeconfig's server at it"]
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    k8s_jobs.echo_pod(k8s_tls, "echo-0")
    assert [t.name for t in provider(k8s_tls, "echo-0").discover().targets] == ["echo-0"]
