"""A strict wire-level Kubernetes API server + kubelet for tests (no real one can run here).

Speaks what the kubernetes python client and dbgfwd use, written to shared/PROTOCOLS.md:
* `GET /api/v1/namespaces[/NS]`, `GET /api/v1/namespaces/NS/pods[/NAME]` with labelSelector,
  fieldSelector (metadata.name, metadata.namespace, status.phase, spec.nodeName), and `watch=true`
  (chunked JSON lines from a resourceVersion; 410 when it is too old).
* `pods/NAME/portforward`: websocket, `v4.channel.k8s.io` / `v4.base64.channel.k8s.io` only; the
  server sends each channel's port prefix, dials the pod once per port per websocket, writes
  kubelet-style text on the error channel when that fails and then closes.
* `pods/NAME/exec`: websocket, channels 1/2 output and a Status JSON on 3.
* Bearer-token auth (401 Status JSON) and an RBAC switch (403 Status JSON naming verb/resource).
Behind it, pods are network namespaces running real processes (tests/support/k8s_pods.py).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from tests.support import k8s_stream
from tests.support.k8s_pods import PodRuntime
from tests.support.net import ApiHTTPServer

FIELDS = {"metadata.name", "metadata.namespace", "status.phase", "spec.nodeName"}


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


class ApiFailure(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.body = status_body(code, reason, message, details)
        self.code = code


# ---- selectors (the apimachinery grammar and validation, strictly) ----

_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SPECIAL = "=!(),<>"
_OPS = ("==", "!=", "=", "!", "(", ")", ",", "<", ">")


def _tokens(text: str) -> list[str]:
    """The label selector lexer: operators and punctuation, else runs of other non-blank characters."""
    out, i = [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        op = next((o for o in _OPS if text.startswith(o, i)), None)
        if op:
            out.append(op)
            i += len(op)
            continue
        j = i
        while j < len(text) and not text[j].isspace() and text[j] not in _SPECIAL:
            j += 1
        out.append(text[i:j])
        i = j
    return out


def _bad(text: str, why: str) -> ApiFailure:
    return ApiFailure(400, "BadRequest", f"unable to parse requirement: {why} (selector {text!r})")


def _check_key(text: str, key: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise _bad(text, f'key: Invalid value: "{key}": prefix part must be a lowercase RFC 1123 subdomain')
    if len(name) > 63 or not _NAME.match(name):
        raise _bad(text, f'key: Invalid value: "{key}": name part must consist of alphanumeric characters, '
                         "'-', '_' or '.', must start and end with an alphanumeric character, and be at "
                         "most 63 characters")


def _check_value(text: str, key: str, value: str) -> None:
    if value and (len(value) > 63 or not _NAME.match(value)):
        raise _bad(text, f'values[0][{key}]: Invalid value: "{value}": a valid label must be an empty string '
                         "or consist of alphanumeric characters, '-', '_' or '.', must start and end with an "
                         "alphanumeric character, and be at most 63 characters")


def _parse_labels(text: str) -> list[tuple]:
    """[(key, op, values)] with op one of exists, !exists, =, !=, in, notin, gt, lt; 400 on what
    apimachinery's parser or its validation rejects."""
    toks, reqs, i = _tokens(text), [], 0

    def ident(what: str) -> str:
        nonlocal i
        tok = toks[i] if i < len(toks) else ""
        if tok == "" or tok in _OPS:
            raise _bad(text, f"found '{tok}', expected: {what}")
        i += 1
        return tok

    while toks:
        neg = i < len(toks) and toks[i] == "!"
        i += neg
        key = ident("identifier")
        _check_key(text, key)
        op = toks[i] if i < len(toks) else ","
        if neg or op == ",":
            if op != ",":
                raise _bad(text, f"found '{op}', expected: ','")
            reqs.append((key, "!exists" if neg else "exists", []))
        elif op in ("=", "==", "!="):
            i += 1
            value = "" if i >= len(toks) or toks[i] == "," else ident("identifier")
            _check_value(text, key, value)
            reqs.append((key, "!=" if op == "!=" else "=", [value]))
        elif op in ("<", ">"):
            i += 1
            value = ident("integer")
            if not value.isdigit():
                raise _bad(text, f"for 'Gt', 'Lt' operators, the value must be an integer: {value!r}")
            reqs.append((key, "gt" if op == ">" else "lt", [value]))
        elif op in ("in", "notin"):
            i += 1
            if i >= len(toks) or toks[i] != "(":
                raise _bad(text, f"found '{toks[i] if i < len(toks) else ''}', expected: '('")
            i += 1
            values: list[str] = []
            while i < len(toks) and toks[i] != ")":
                values.append("" if toks[i] == "," else ident("identifier"))
                if i < len(toks) and toks[i] not in (",", ")"):
                    raise _bad(text, f"found '{toks[i]}', expected: ',' or ')'")
                i += i < len(toks) and toks[i] == ","
            if i >= len(toks):
                raise _bad(text, "found '', expected: ')'")
            i += 1
            if not values:
                raise _bad(text, "for 'in', 'notin' operators, values set can't be empty")
            for value in values:
                _check_value(text, key, value)
            reqs.append((key, op, values))
        else:
            raise _bad(text, f"found '{op}', expected: in, notin, =, ==, !=, gt, lt")
        if i == len(toks):
            break
        if toks[i] != ",":
            raise _bad(text, f"found '{toks[i]}', expected: ','")
        i += 1
        if i == len(toks):
            raise _bad(text, "found '', expected: identifier or '!'")
    return reqs


def label_matcher(text: str | None):
    reqs = _parse_labels(text or "")

    def holds(lab: dict, key: str, op: str, values: list[str]) -> bool:
        if op == "exists":
            return key in lab
        if op == "!exists":
            return key not in lab
        if op == "=":
            return lab.get(key) == values[0]
        if op == "!=":
            return lab.get(key) != values[0]
        if op == "in":
            return lab.get(key) in values
        if op == "notin":
            return lab.get(key) not in values
        have = lab.get(key, "")
        if not have.isdigit():
            return False
        return int(have) > int(values[0]) if op == "gt" else int(have) < int(values[0])

    def match(lab: dict) -> bool:
        return all(holds(lab, *req) for req in reqs)
    return match


def field_matcher(text: str | None):
    reqs = []
    for part in filter(None, (text or "").split(",")):  # apimachinery skips empty field terms
        m = re.match(r"^\s*([a-zA-Z.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise ApiFailure(400, "BadRequest", f"invalid field selector: {part!r}")
        if m.group(1) not in FIELDS:
            raise ApiFailure(400, "BadRequest", f'"{m.group(1)}" is not a known field selector: '
                             f"only {', '.join(sorted(FIELDS))}")
        reqs.append(m.groups())

    def value(pod: dict, path: str) -> str:
        cur = pod
        for piece in path.split("."):
            cur = (cur or {}).get(piece) if isinstance(cur, dict) else None
        return "" if cur is None else str(cur)

    def match(pod: dict) -> bool:
        return all((value(pod, f) == v) == (op != "!=") for f, op, v in reqs)
    return match


@dataclass
class Pod:
    obj: dict
    runtime: PodRuntime | None = None

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.obj["metadata"]["namespace"]


@dataclass
class Stats:
    portforward: dict = field(default_factory=dict)  # pod -> websockets opened
    exec: dict = field(default_factory=dict)
    exec_containers: list = field(default_factory=list)  # the container each exec ran in
    pings: int = 0
    violations: list = field(default_factory=list)


class K8sServer:
    """Start with `with K8sServer() as srv:`; add pods with add_pod(); kubeconfig() writes a config."""

    def __init__(self, token: str = "test-token-5f3a", root: Path | None = None, tls: bool = False):
        self.token = token
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="dbgfwd-k8s-", dir="/var/tmp"))
        self.namespaces = {"default"}
        self.denied: set[tuple[str, str]] = set()  # (verb, resource) the test user may not do
        self.pods: dict[tuple[str, str], Pod] = {}
        self.events: list[tuple[int, str, dict]] = []  # (resourceVersion, type, pod snapshot)
        self.oldest_rv = 1
        self.rv = 1
        self.cond = threading.Condition()
        self.streams: list = []  # live portforward ServerWebSockets
        self.stats = Stats()
        self.user = "system:serviceaccount:test:dev"
        self.prefer_base64 = False
        self.httpd = ApiHTTPServer(("127.0.0.1", 0), _handler(self, tls))
        self.port = self.httpd.server_address[1]
        self.pki = None
        if tls:  # HTTPS with a certificate of its own CA, which kubeconfig() hands to clients
            from tests.support.tlscert import make_pki

            self.pki = make_pki(self.root / "pki")
            self.httpd.tls_context = self.pki.server_context()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.stopped = False

    def __enter__(self) -> "K8sServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopped = True
        with self.cond:
            self.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.kill_streams()
        for pod in list(self.pods.values()):
            if pod.runtime:
                pod.runtime.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def kubeconfig(self, path: Path, namespace: str | None = None, token: str | None = None,
                   context: str = "test") -> Path:
        ctx: dict = {"cluster": "test", "user": "dev"}
        if namespace:
            ctx["namespace"] = namespace
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": context,
               "clusters": [{"name": "test", "cluster": self._cluster_entry()}],
               "users": [{"name": "dev", "user": {"token": token or self.token}}],
               "contexts": [{"name": context, "context": ctx}]}
        path.write_text(json.dumps(cfg))  # JSON is YAML
        return path

    def _cluster_entry(self) -> dict:
        entry = {"server": self.url}
        if self.pki:
            entry["certificate-authority-data"] = base64.b64encode(self.pki.ca.read_bytes()).decode()
        return entry

    # ---- pods ----

    def _record(self, kind: str, pod: Pod) -> None:
        with self.cond:
            self.rv += 1
            pod.obj["metadata"]["resourceVersion"] = str(self.rv)
            self.events.append((self.rv, kind, json.loads(json.dumps(pod.obj))))
            self.cond.notify_all()

    def add_pod(self, name: str, namespace: str = "default", labels: dict | None = None,
                annotations: dict | None = None, env: dict | None = None, command: list[str] | None = None,
                working_dir: str | None = None, container: str = "main", start: bool = True,
                owner: tuple[str, str] | None = None, sidecars: tuple[str, ...] = ()) -> Pod:
        """`sidecars`: containers listed before the ranks' one (spec only: the pod's processes are the main
        container's), so the ranks' container is neither the first nor, without the annotation, the default."""
        self.namespaces.add(namespace)
        cont = {"name": container, "image": "python:3.11", "command": command or ["sleep", "infinity"],
                "env": [{"name": k, "value": str(v)} for k, v in (env or {}).items()]}
        if working_dir:
            cont["workingDir"] = working_dir
        meta = {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "labels": dict(labels or {}), "annotations": dict(annotations or {})}
        if owner:
            meta["ownerReferences"] = [{"apiVersion": "v1", "kind": owner[0], "name": owner[1],
                                        "uid": str(uuid.uuid4()), "controller": True}]
        side = [{"name": s, "image": "envoy:1", "command": ["envoy"], "workingDir": "/etc/envoy"} for s in sidecars]
        obj = {"kind": "Pod", "apiVersion": "v1", "metadata": meta,
               "spec": {"containers": side + [cont], "nodeName": "node-1"},
               "status": {"phase": "Pending"}}
        pod = Pod(obj)
        self.pods[(namespace, name)] = pod
        self._record("ADDED", pod)
        if start:
            self.start_pod(name, namespace)
        return pod

    def start_pod(self, name: str, namespace: str = "default") -> Pod:
        pod = self.pods[(namespace, name)]
        cont = pod.obj["spec"]["containers"][-1]  # the ranks' container (after any sidecars)
        env = {e["name"]: e["value"] for e in cont.get("env", [])}
        pod.runtime = PodRuntime(self.root, name, env, cont["command"], cont.get("workingDir", "/"))
        pod.runtime.start()
        pod.obj["status"] = {"phase": "Running", "podIP": f"10.0.0.{len(self.pods) % 250 + 1}",
                             "conditions": [{"type": "Ready", "status": "True"}]}
        self._record("MODIFIED", pod)
        return pod

    def delete_pod(self, name: str, namespace: str = "default") -> None:
        pod = self.pods[(namespace, name)]
        pod.obj["metadata"]["deletionTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._record("MODIFIED", pod)
        if pod.runtime:
            pod.runtime.stop()
        del self.pods[(namespace, name)]
        self._record("DELETED", pod)

    def kill_streams(self) -> int:
        """Cut every live port-forward websocket without a close frame; returns how many."""
        with self.cond:
            streams, self.streams = list(self.streams), []
        for ws in streams:
            ws.kill()
        return len(streams)

    def deny(self, verb: str, resource: str) -> None:
        self.denied.add((verb, resource))

    # ---- API ----

    def authorize(self, verb: str, resource: str, ns: str, name: str | None = None) -> None:
        if (verb, resource) in self.denied:
            base, _, sub = resource.partition("/")
            what = f'{base} "{name}"' if name else base
            raise ApiFailure(403, "Forbidden", f'{what} is forbidden: User "{self.user}" cannot {verb} '
                             f'resource "{resource}" in API group "" in the namespace "{ns}"',
                             {"name": name, "kind": base})

    def list_pods(self, ns: str, query: dict) -> dict:
        lab, fld = label_matcher(query.get("labelSelector")), field_matcher(query.get("fieldSelector"))
        with self.cond:
            items = [json.loads(json.dumps(p.obj)) for p in self.pods.values()
                     if p.namespace == ns and lab(p.obj["metadata"].get("labels", {})) and fld(p.obj)]
            rv = self.rv
        return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": str(rv)},
                "items": sorted(items, key=lambda p: p["metadata"]["name"])}


def _handler(server: K8sServer, tls: bool = False):
    # Over TLS the request is read unbuffered: an upgraded connection is handed to a websocket whole, with no
    # bytes left behind in a reader's buffer (see k8s_stream._upgrade).
    return type("Handler", (ApiHandler,), {"srv": server, "rbufsize": 0 if tls else -1})


class ApiHandler(BaseHTTPRequestHandler):
    srv: K8sServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # exec and portforward accept POST on the real server too
        self.do_GET(post=True)

    def do_GET(self, post: bool = False) -> None:
        try:
            if self.request_version == "HTTP/1.1" and not self.headers.get("Host"):
                return self._bare(400, "missing required Host header")  # Go's net/http, before any handler
            self._route(post)
        except ApiFailure as exc:
            self._json(exc.code, exc.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _bare(self, code: int, text: str) -> None:
        data = f"{code} Bad Request: {text}".encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def _route(self, post: bool = False) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        multi = parse_qs(url.query, keep_blank_values=True)
        auth = self.headers.get("Authorization") or ""
        if auth != f"Bearer {self.srv.token}":
            raise ApiFailure(401, "Unauthorized", "Unauthorized")
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts == ["version"]:
            return self._json(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-dbgfwd-test"})
        if parts[:2] != ["api", "v1"] or len(parts) < 3 or parts[2] != "namespaces":
            raise ApiFailure(404, "NotFound", "the server could not find the requested resource")
        rest = parts[3:]
        if post and not (len(rest) == 4 and rest[1] == "pods" and rest[3] in ("portforward", "exec")):
            # creating pods or namespaces is not what dbgfwd does; a POST to one pod is never allowed
            raise ApiFailure(405, "MethodNotAllowed", "the server does not allow this method on the "
                             "requested resource")
        if not rest:
            self.srv.authorize("list", "namespaces", "")
            return self._json(200, {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {},
                                    "items": [{"metadata": {"name": n}} for n in sorted(self.srv.namespaces)]})
        ns = rest[0]
        if len(rest) == 1:
            self.srv.authorize("get", "namespaces", ns, ns)
            if ns not in self.srv.namespaces:
                raise ApiFailure(404, "NotFound", f'namespaces "{ns}" not found')
            return self._json(200, {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": ns},
                                    "status": {"phase": "Active"}})
        if rest[1] != "pods" or len(rest) > 4:
            raise ApiFailure(404, "NotFound", "the server could not find the requested resource")
        if len(rest) == 2:
            if query.get("watch") in ("true", "1"):
                self.srv.authorize("watch", "pods", ns)
                return self._watch(ns, query)
            self.srv.authorize("list", "pods", ns)
            return self._json(200, self.srv.list_pods(ns, query))
        name = rest[2]
        pod = self.srv.pods.get((ns, name))
        if len(rest) == 3:
            self.srv.authorize("get", "pods", ns, name)
            if pod is None:
                raise ApiFailure(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})
            return self._json(200, pod.obj)
        sub = rest[3]
        if sub not in ("portforward", "exec"):
            raise ApiFailure(404, "NotFound", "the server could not find the requested resource")
        self.srv.authorize("get", f"pods/{sub}", ns, name)
        self.srv.authorize("create", f"pods/{sub}", ns, name)
        if pod is None:
            raise ApiFailure(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})
        if pod.obj["status"].get("phase") != "Running" or pod.runtime is None:
            raise ApiFailure(400, "BadRequest", f"pod {name} is not running (phase "
                             f"{pod.obj['status'].get('phase')}): unable to upgrade connection")
        if sub == "portforward":
            return k8s_stream.portforward(self, pod, multi)
        return k8s_stream.exec_(self, pod, multi)

    def _watch(self, ns: str, query: dict) -> None:
        lab, fld = label_matcher(query.get("labelSelector")), field_matcher(query.get("fieldSelector"))
        timeout_text = query.get("timeoutSeconds") or "1800"
        if not re.fullmatch(r"-?[0-9]+", timeout_text):  # the parameter codec's strconv.ParseInt
            raise ApiFailure(400, "BadRequest", f'timeoutSeconds: strconv.ParseInt: parsing "{timeout_text}": '
                             "invalid syntax")
        timeout = float(timeout_text) if int(timeout_text) > 0 else 1800.0
        since = query.get("resourceVersion") or ""
        if since and not since.isdigit():
            raise ApiFailure(400, "BadRequest", f'invalid resource version "{since}"')
        srv = self.srv
        with srv.cond:
            if since and since != "0" and int(since) < srv.oldest_rv - 1:
                expired = True
            else:
                expired = False
                if since in ("", "0"):
                    backlog = [(srv.rv, "ADDED", json.loads(json.dumps(p.obj))) for p in srv.pods.values()
                               if p.namespace == ns]
                    cursor = srv.rv
                else:
                    backlog, cursor = [], int(since)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if expired:
            self._chunk({"type": "ERROR", "object": status_body(410, "Expired", "too old resource version")})
            return self._chunk_end()
        end = time.monotonic() + timeout
        try:
            for _, kind, obj in backlog:
                if lab(obj["metadata"].get("labels", {})) and fld(obj):
                    self._chunk({"type": kind, "object": obj})
            while time.monotonic() < end and not srv.stopped:
                with srv.cond:
                    fresh = [e for e in srv.events if e[0] > cursor]
                    if not fresh:
                        srv.cond.wait(min(1.0, max(end - time.monotonic(), 0.01)))
                        continue
                cursor = fresh[-1][0]
                for _, kind, obj in fresh:
                    if obj["metadata"]["namespace"] == ns and lab(obj["metadata"].get("labels", {})) and fld(obj):
                        self._chunk({"type": kind, "object": obj})
            self._chunk_end()
        except OSError:
            self.close_connection = True

    def _chunk(self, event: dict) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _chunk_end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
