"""The test apiserver checked against the official kubernetes client, and for strictness.

If the official client's own list/watch, `kubernetes.stream.portforward` and `stream` (exec) work
against it, the test server speaks the protocol as real servers do, not just as dbgfwd expects.
"""

import base64
import json
import os
import socket
import struct

import pytest

from tests.support import k8s_jobs
from tests.support.k8s_ws import random_key


def official(srv, token=None):
    from kubernetes import client, config

    cfg = client.Configuration()
    path = srv.kubeconfig_path
    if token:
        path = srv.kubeconfig(path.with_name("kubeconfig-other"), token=token)
    config.load_kube_config(config_file=str(path), client_configuration=cfg)
    return client.CoreV1Api(client.ApiClient(cfg))


def raw_get(srv, path, headers=None, token="default", method="GET", host=True):
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    hdrs = {"Host": f"127.0.0.1:{srv.port}"} if host else {}
    if token:
        hdrs["Authorization"] = f"Bearer {srv.token if token == 'default' else token}"
    hdrs.update(headers or {})
    req = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    sock.sendall(req.encode())
    return sock


def read_response_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while status != 101 and len(body) < length:
        body += sock.recv(4096)
    return status, head.decode(), body


def ws_headers(proto="v4.channel.k8s.io"):
    h = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
         "Sec-WebSocket-Key": random_key()}
    if proto:
        h["Sec-WebSocket-Protocol"] = proto
    return h


def test_list_watch_selectors_with_official_client(k8s):
    api = official(k8s)
    k8s.add_pod("a-0", labels={"app": "a", "tier": "x"}, start=False)
    k8s.add_pod("b-0", labels={"app": "b"}, start=False)
    pods = api.list_namespaced_pod("default", label_selector="app in (a,c),tier")
    assert [p.metadata.name for p in pods.items] == ["a-0"]  # decoded into V1Pod models
    assert api.list_namespaced_pod("default", field_selector="status.phase=Running").items == []
    assert len(api.list_namespaced_pod("default", label_selector="app!=zzz").items) == 2
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as exc:
        api.list_namespaced_pod("default", field_selector="spec.bogus=1")
    assert exc.value.status == 400
    w = watch.Watch()
    seen = []
    version = pods.metadata.resource_version
    k8s.add_pod("a-1", labels={"app": "a"}, start=False)
    for event in w.stream(api.list_namespaced_pod, "default", label_selector="app=a",
                          resource_version=version, timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 1:
            k8s.delete_pod("a-1")
        if len(seen) == 3:
            w.stop()
    assert seen == [("ADDED", "a-1"), ("MODIFIED", "a-1"), ("DELETED", "a-1")]


def test_auth_and_rbac_status_bodies(k8s):
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as exc:
        official(k8s, token="expired").list_namespaced_pod("default")
    assert exc.value.status == 401 and json.loads(exc.value.body)["reason"] == "Unauthorized"
    k8s.deny("list", "pods")
    with pytest.raises(ApiException) as exc:
        official(k8s).list_namespaced_pod("ns1")
    body = json.loads(exc.value.body)
    assert exc.value.status == 403 and 'cannot list resource "pods"' in body["message"]


def test_official_portforward_and_exec(k8s):
    from kubernetes.stream import portforward, stream

    pod = k8s_jobs.echo_pod(k8s, "echo-0")
    api = official(k8s)
    out = stream(api.connect_get_namespaced_pod_exec, "echo-0", "default",
                 command=["sh", "-c", "echo hi; echo err >&2; cat /proc/net/tcp"], stderr=True, stdout=True,
                 stdin=False, tty=False)
    assert "hi\n" in out and "err\n" in out and "local_address" in out  # stdout+stderr interleave
    k8s_jobs.wait_listening(pod, 7000)
    pf = portforward(api.connect_get_namespaced_pod_portforward, "echo-0", "default", ports="7000")
    sock = pf.socket(7000)
    sock.settimeout(10)
    payload = os.urandom(300_000)
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        got += sock.recv(65536)
    assert got == payload
    sock.close()
    # nothing listens on 7001: the official client sees our error-channel text
    pf = portforward(api.connect_get_namespaced_pod_portforward, "echo-0", "default", ports="7001")
    sock = pf.socket(7001)
    sock.settimeout(10)
    assert sock.recv(10) == b""
    assert "connection refused" in pf.error(7001)
    assert k8s.stats.violations == []


def test_exec_status_on_failure_and_base64_subprotocol(k8s):
    k8s.add_pod("p")
    sock = raw_get(k8s, "/api/v1/namespaces/default/pods/p/exec?command=sh&command=-c&command=exit%203&stdout=true",
                   ws_headers("v4.base64.channel.k8s.io"))
    status, head, rest = read_response_head(sock)
    assert status == 101 and "v4.base64.channel.k8s.io" in head
    frames = read_frames(sock, rest)
    chan3 = [f for op, f in frames if op == 1 and f[:1] == b"3"]
    body = json.loads(base64.b64decode(chan3[0][1:]))
    assert body["reason"] == "NonZeroExitCode" and body["details"]["causes"][0]["message"] == "3"


@pytest.mark.parametrize("path,headers,code,text", [
    ("portforward", "ws", 400, 'query parameter "port" is required'),
    ("portforward?ports=5678", None, 400, "Upgrade request required"),
    ("portforward?ports=5678", "v5.channel.k8s.io", 400, "unable to negotiate protocol"),
    ("portforward?ports=70000", "ws", 400, "unable to parse"),
    ("exec?stdout=true", "ws", 400, "at least 1 command"),
    ("exec?command=ls", "ws", 400, "at least one of stdin, stdout, stderr"),
])
def test_rejects_what_the_real_server_rejects(k8s, path, headers, code, text):
    k8s.add_pod("p")
    hdr = None if headers is None else ws_headers() if headers == "ws" else ws_headers(headers)
    sock = raw_get(k8s, f"/api/v1/namespaces/default/pods/p/{path}", hdr)
    status, head, body = read_response_head(sock)
    assert status == code and text in json.loads(body)["message"]


@pytest.mark.parametrize("selector,text", [
    ("app in ()", "values set can't be empty"),
    ("app in (a b)", "expected: ',' or ')'"),
    ("-x=y", 'Invalid value: "-x"'),
    ("app=-bad", 'Invalid value: "-bad"'),
    ("app=" + "v" * 64, "at most 63 characters"),
    ("app=a,", "expected: identifier or '!'"),
    ("!app=a", "expected: ','"),
    ("app in a", "expected: '('"),
])
def test_label_selectors_the_real_server_rejects(k8s, selector, text):
    from urllib.parse import quote

    k8s.add_pod("p", labels={"app": "a"}, start=False)
    for watch in ("", "&watch=true"):
        sock = raw_get(k8s, f"/api/v1/namespaces/default/pods?labelSelector={quote(selector)}{watch}")
        status, _, body = read_response_head(sock)
        assert status == 400 and text in json.loads(body)["message"], (selector, watch)


def test_label_selectors_the_real_server_accepts():
    from tests.support.k8s_server import label_matcher

    pod = {"app": "a", "tier": "x", "batch.kubernetes.io/job-name": "j", "n": "7"}
    for selector, matches in [("", True), ("app=a", True), ("app==a", True), ("app!=a", False),
                              ("app in (a,c),tier", True), ("app notin (a)", False), ("!tier", False),
                              ("!gone", True), ("batch.kubernetes.io/job-name=j", True), ("n>6", True),
                              ("n<7", False), ("tier=", False), (" app = a , tier ", True)]:
        assert label_matcher(selector)(pod) is matches, selector


@pytest.mark.parametrize("query,text", [
    ("ports=%2B7000", 'unable to parse "+7000"'),
    ("ports=7_000", 'unable to parse "7_000"'),
    ("ports=%207000", 'unable to parse " 7000"'),
    ("ports=7000,", 'unable to parse ""'),
    ("ports=0", 'unable to parse "0"'),
])
def test_portforward_ports_the_real_server_rejects(k8s, query, text):
    k8s.add_pod("p")
    sock = raw_get(k8s, f"/api/v1/namespaces/default/pods/p/portforward?{query}", ws_headers())
    status, _, body = read_response_head(sock)
    assert status == 400 and text in json.loads(body)["message"]


@pytest.mark.parametrize("method,path,headers,host,code,text", [
    ("GET", "pods/p/exec?command=ls&stdout=true&stderr=true&tty=true", "ws", True, 400,
     "tty and stderr cannot both be true"),
    ("POST", "pods/p", None, True, 405, "does not allow this method"),
    ("POST", "pods", None, True, 405, "does not allow this method"),
    ("GET", "pods", None, False, 400, "missing required Host header"),
    ("GET", "pods?watch=true&resourceVersion=abc", None, True, 400, 'invalid resource version "abc"'),
    ("GET", "pods?watch=true&timeoutSeconds=abc", None, True, 400, 'parsing "abc": invalid syntax'),
])
def test_requests_the_real_server_rejects(k8s, method, path, headers, host, code, text):
    k8s.add_pod("p")
    sock = raw_get(k8s, f"/api/v1/namespaces/default/{path}", ws_headers() if headers else None,
                   method=method, host=host)
    status, head, body = read_response_head(sock)
    message = json.loads(body)["message"] if "application/json" in head else body.decode()
    assert status == code and text in message


def test_portforward_prefixes_and_unmasked_frames_rejected(k8s):
    k8s_jobs.wait_listening(k8s_jobs.echo_pod(k8s, "echo-0"), 7000)
    sock = raw_get(k8s, "/api/v1/namespaces/default/pods/echo-0/portforward?ports=7999", ws_headers())
    status, _, rest = read_response_head(sock)
    assert status == 101
    frames = read_frames(sock, rest)
    assert frames[0] == (2, b"\x00" + struct.pack("<H", 7999)) and frames[1] == (2, b"\x01" + struct.pack("<H", 7999))
    assert b"connection refused" in frames[2][1] and frames[2][1][:1] == b"\x01"
    assert frames[-1][0] == 8  # close
    # an unmasked client frame is a protocol violation: the server closes with 1002
    sock = raw_get(k8s, "/api/v1/namespaces/default/pods/echo-0/portforward?ports=7000", ws_headers())
    status, _, rest = read_response_head(sock)
    sock.sendall(bytes([0x82, 3]) + b"\x00hi")
    frames = read_frames(sock, rest)
    assert frames[-1][0] == 8 and struct.unpack(">H", frames[-1][1][:2])[0] == 1002


def read_frames(sock, buf=b""):
    """Server frames until close/EOF (tests only; no masking from servers)."""
    sock.settimeout(15)
    frames = []
    while True:
        while len(buf) < 2 or len(buf) < _frame_len(buf):
            chunk = sock.recv(65536)
            if not chunk:
                return frames
            buf += chunk
        n = _frame_len(buf)
        op, ln = buf[0] & 0x0F, buf[1] & 0x7F
        off = 2 + (2 if ln == 126 else 8 if ln == 127 else 0)
        frames.append((op, buf[off:n]))
        buf = buf[n:]
        if op == 8:
            return frames


def _frame_len(buf):
    ln = buf[1] & 0x7F
    if ln == 126:
        return 4 + struct.unpack(">H", buf[2:4])[0] if len(buf) >= 4 else 1 << 30
    if ln == 127:
        return 10 + struct.unpack(">Q", buf[2:10])[0] if len(buf) >= 10 else 1 << 30
    return 2 + ln
