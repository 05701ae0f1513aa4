"""One cluster connection: kubeconfig, namespace, pod list/watch, and API errors as DbgfwdErrors.

Pods are handled as the plain JSON dicts the API server returns (no model objects: decoding 64 pods
into generated models costs more than the request, and dicts are what `spec` works on).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator

from dbgfwd.errors import (AuthError, BadFileError, DbgfwdError, NotFoundError, NotFoundPathError, UnreachableError,
                           UsageError)

log = logging.getLogger("dbgfwd.providers.kubernetes")

LOGIN_HINT = ("log in again (`oc login` on OpenShift; `kubectl` with a refreshed token, e.g. "
              "`aws eks update-kubeconfig` or `gcloud container clusters get-credentials`)")


@dataclass(frozen=True)
class ClusterRef:
    server: str
    context: str
    namespace: str

    def where(self) -> str:
        return f"namespace {self.namespace} (context {self.context or '-'}, {self.server})"


def status_message(body: Any) -> str:
    """The `message` of a Kubernetes Status JSON body, else the body's first line."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = str(body or "").strip()
    try:
        data = json.loads(text)
        if isinstance(data, dict) and data.get("message"):
            return str(data["message"])
    except ValueError:
        pass
    return text.splitlines()[0][:300] if text else ""


def http_error(status: int, body: Any, what: str, ref: ClusterRef, rbac: str) -> DbgfwdError:
    """The DbgfwdError for an HTTP error answer to `what` (e.g. "list pods")."""
    msg = status_message(body)
    if status == 401:
        return AuthError(f"{ref.server} rejected the credentials of context {ref.context or '-'} "
                         f"(401 Unauthorized): the token has expired or is invalid", hint=LOGIN_HINT)
    if status == 403:
        return AuthError(f"forbidden to {what} in namespace {ref.namespace}: {msg or '403 Forbidden'}",
                         hint=f"ask a cluster admin for RBAC {rbac} in namespace {ref.namespace} "
                              f"(check with `kubectl auth can-i`)")
    if status == 404:
        return NotFoundError(f"{what}: not found in {ref.where()}: {msg}",
                             hint="check the name and --namespace/--context")
    if status in (400, 422):  # the request itself is wrong: a bad selector, name or field
        return UsageError(f"{what}: the API server rejected the request: {msg or f'HTTP {status}'}",
                          hint="check --selector/--field-selector and the names given (kubectl syntax)")
    return UnreachableError(f"{what} failed in {ref.where()}: HTTP {status} {msg}".rstrip(),
                            hint="check the API server's health, then retry")


def _proxy_credentials(cfg) -> None:
    """A proxy-url with a user and password authenticates to the proxy, as kubectl does; the kubernetes client
    sends the credentials of `proxy_headers` only, so they are put there (percent-decoded, as in any URL)."""
    from urllib.parse import unquote, urlparse

    if not cfg.proxy:
        return
    parsed = urlparse(cfg.proxy)
    if parsed.scheme.lower().startswith("socks") and not bypasses_proxy(cfg):
        # The kubernetes client needs PySocks for it (it failed with "No module named 'socks'"), and the pod
        # websockets have no SOCKS support here either.
        where = parsed.netloc.rpartition("@")[2]
        raise UsageError(f"the kubeconfig's proxy {parsed.scheme}://{where} is a SOCKS proxy, which dbgfwd does "
                         "not support yet", hint="use an HTTP proxy (proxy-url: http://host:port), or forward the "
                         "API server's port (ssh -L) and point the kubeconfig's server at it")
    if cfg.proxy_headers:
        return
    if parsed.username is None:
        return
    import urllib3

    cfg.proxy_headers = urllib3.make_headers(
        proxy_basic_auth=f"{unquote(parsed.username)}:{unquote(parsed.password or '')}")


def bypasses_proxy(cfg) -> bool:
    """NO_PROXY takes the API server off the proxy: the kubernetes client's own rule (its API calls follow it), or
    with an older client that has none, a host or domain in the list."""
    try:
        from kubernetes.client.rest import should_bypass_proxies
    except ImportError:
        from urllib.parse import urlparse

        host = (urlparse(cfg.host).hostname or "").lower()
        for entry in (e.strip().lower().lstrip(".") for e in (cfg.no_proxy or "").split(",")):
            if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
                return True
        return False
    return should_bypass_proxies(cfg.host, cfg.no_proxy or "")


def proxy_error(proxy: str | None, server: str, reason: BaseException) -> UnreachableError:
    """The proxy in the way said no, or could not be reached: said with its address only (its URL may carry a
    password)."""
    from urllib.parse import urlparse

    where = urlparse(proxy or "").netloc.rpartition("@")[2] or "the proxy"
    cause = reason.args[-1] if reason.args else reason
    detail = str(cause) or type(cause).__name__
    hint = ("check the user and password in the kubeconfig's proxy-url" if "407" in detail
            else "check proxy-url in the kubeconfig, and that the proxy is up")
    return UnreachableError(f"cannot reach {server} through the proxy {where}: {detail}", hint=hint)


class Cluster:
    """The kubernetes client's Configuration plus the namespace, loaded the way kubectl does."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None,
                 namespace: str | None = None, request_timeout: float = 15.0):
        from kubernetes import client, config

        self.configuration = client.Configuration()
        self.request_timeout = request_timeout
        ctx_namespace, ctx_name = self._load(config, kubeconfig, context)
        _proxy_credentials(self.configuration)
        self.ref = ClusterRef(server=self.configuration.host, context=ctx_name,
                              namespace=namespace or ctx_namespace or "default")
        self.api_client = client.ApiClient(self.configuration)

    def _load(self, config, kubeconfig: str | None, context: str | None) -> tuple[str | None, str]:
        path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        first = path.split(os.pathsep)[0]
        if not kubeconfig and not any(os.path.exists(p) for p in path.split(os.pathsep)):
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=self.configuration)
                ns_file = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
                try:
                    with open(ns_file) as fh:
                        return fh.read().strip(), "in-cluster"
                except OSError:
                    return None, "in-cluster"
            raise NotFoundPathError(f"no kubeconfig found at {path}",
                                hint="pass --kubeconfig, set KUBECONFIG, or log in (`oc login`, "
                                     "`kubectl config use-context`)")
        if kubeconfig and not os.path.exists(kubeconfig):
            raise NotFoundPathError(f"kubeconfig {kubeconfig} does not exist", hint="check --kubeconfig")
        try:
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        except config.ConfigException as exc:
            raise BadFileError(first, f"not a usable kubeconfig ({exc})",
                               hint="check the file, or pass another with --kubeconfig") from None
        except Exception as exc:  # yaml errors and friends
            raise BadFileError(first, f"does not parse as a kubeconfig ({type(exc).__name__})",
                               hint="check the file, or pass another with --kubeconfig") from None
        chosen = active
        if context:
            chosen = next((c for c in contexts or () if c.get("name") == context), None)
            if chosen is None:
                names = ", ".join(c.get("name", "?") for c in contexts or ()) or "none"
                raise UsageError(f"context {context!r} is not in the kubeconfig (contexts: {names})",
                                 hint="pick one from `kubectl config get-contexts`")
        if not chosen:
            raise BadFileError(first, "has no current context", hint="pass --context")
        try:
            config.load_kube_config(config_file=kubeconfig, context=chosen["name"],
                                    client_configuration=self.configuration, persist_config=False)
        except config.ConfigException as exc:
            raise BadFileError(first, f"context {chosen['name']}: {exc}",
                               hint="check the context's cluster and user entries") from None
        if str(self.configuration.host).startswith("https") and not self.configuration.verify_ssl:
            # Said once here, in our words; urllib3's per-request InsecureRequestWarning is silenced.
            log.warning("the API server's TLS certificate is not checked (insecure-skip-tls-verify in context "
                        "%s): anyone on the network path could read your token", chosen["name"])
        return (chosen.get("context") or {}).get("namespace"), chosen["name"]

    # ---- REST ----

    def list_pods(self, label_selector: str | None = None,
                  field_selector: str | None = None) -> tuple[list[dict], str]:
        """(pods, resourceVersion) in the namespace."""
        query = [(k, v) for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v]
        data = self._get(lambda: self._list_pods_raw(query, self.request_timeout))
        return list(data.get("items") or ()), str((data.get("metadata") or {}).get("resourceVersion", ""))

    def watch_pods(self, label_selector: str | None, resource_version: str,
                   timeout_seconds: int = 300) -> Iterator[tuple[str, dict]]:
        """(type, pod) events until the server ends the watch. Raises DbgfwdError on HTTP errors."""
        query = [("labelSelector", label_selector)] if label_selector else []
        query += [("watch", "true"), ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(timeout_seconds))]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        resp = self._call(lambda: self._list_pods_raw(query, (self.request_timeout, timeout_seconds + 30)))
        self._watch_resp = resp
        try:
            buf = b""
            for chunk in resp.stream(65536, decode_content=False):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        event = json.loads(line)
                        if event.get("type") == "ERROR":
                            obj = event.get("object") or {}
                            raise http_error(int(obj.get("code") or 500), json.dumps(obj), "watch pods",
                                             self.ref, "`watch` on pods")
                        yield event.get("type", ""), event.get("object") or {}
        finally:
            resp.release_conn()

    def _list_pods_raw(self, query: list[tuple[str, str]], request_timeout):
        """GET the namespace's pods; the raw urllib3 response (JSON, or a watch stream). Raises ApiException on
        a non-2xx answer, as CoreV1Api.list_namespaced_pod(_preload_content=False) does. Made through the
        ApiClient directly where it can: CoreV1Api is one module of every core API call, about 1 s to import
        on a laptop, and dbgfwd needs one of them."""
        api = self.api_client
        if not hasattr(api, "param_serialize"):  # an older kubernetes client: through CoreV1Api
            from kubernetes.client import CoreV1Api

            names = {"labelSelector": "label_selector", "fieldSelector": "field_selector", "watch": "watch",
                     "allowWatchBookmarks": "allow_watch_bookmarks", "timeoutSeconds": "timeout_seconds",
                     "resourceVersion": "resource_version"}
            kwargs = {names[k]: v for k, v in query}
            for flag in ("watch", "allow_watch_bookmarks"):
                if flag in kwargs:
                    kwargs[flag] = True
            if "timeout_seconds" in kwargs:
                kwargs["timeout_seconds"] = int(kwargs["timeout_seconds"])
            return CoreV1Api(api).list_namespaced_pod(self.ref.namespace, _preload_content=False,
                                                      _request_timeout=request_timeout, **kwargs)
        from kubernetes.client.exceptions import ApiException

        request = api.param_serialize(method="GET", resource_path="/api/v1/namespaces/{namespace}/pods",
                                      path_params={"namespace": self.ref.namespace}, query_params=query,
                                      header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        resp = api.call_api(*request, _request_timeout=request_timeout)
        if not 200 <= resp.status <= 299:
            resp.read()
            raise ApiException.from_response(http_resp=resp, body=None, data=None)
        return resp.response

    def stop_watch(self) -> None:
        resp = getattr(self, "_watch_resp", None)
        if resp is not None:
            try:
                resp.shutdown()
            except Exception:
                try:
                    resp.close()
                except Exception:
                    pass

    def _get(self, call) -> dict:
        resp = self._call(call)
        try:
            return json.loads(resp.data)
        except ValueError:
            raise UnreachableError(f"{self.ref.server} answered with something that is not JSON",
                                   hint="check that --kubeconfig points at a Kubernetes API server") from None

    def _call(self, call):
        import urllib3
        from kubernetes.client.exceptions import ApiException

        try:
            return call()
        except ApiException as exc:
            if exc.status in (0, None):
                raise UnreachableError(f"cannot reach {self.ref.server}: {exc.reason}",
                                       hint="check the network/VPN and the kubeconfig server") from None
            raise http_error(exc.status, exc.body, "list pods", self.ref, "`list` and `watch` on pods") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            if isinstance(reason, urllib3.exceptions.ProxyError):
                raise proxy_error(self.configuration.proxy, self.ref.server, reason) from None
            raise UnreachableError(f"cannot reach {self.ref.server}: {type(reason).__name__}",
                                   hint="check the network/VPN and the kubeconfig server") from None
