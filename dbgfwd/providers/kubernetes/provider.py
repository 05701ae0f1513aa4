"""Kubernetes / OpenShift: ranks in pods, forwarded through the API server's portforward websocket.

discover() lists the pods a spec names (pod, name prefix, `pytorchjob/NAME`, ...), a watch thread
keeps each slot's current pod fresh between discoveries, open_stream() opens one v4 portforward
websocket per local connection to whichever pod fills the slot *now*, probe() reads rank markers
and /proc/net/tcp through exec. The kubernetes SDK is imported inside methods only.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import ClassVar

from dbgfwd.errors import DbgfwdError, ProviderUnavailable, UpstreamError
from dbgfwd.providers.base import Availability, Capability, Discovery, Provider, ProviderConfig, Stream, Target
from dbgfwd.providers.kubernetes.options import OPTIONS, TITLE
from dbgfwd.rank.markers import ProbeResult, parse_probe_output, probe_command

log = logging.getLogger("dbgfwd.providers.kubernetes")

PORTFORWARD_RBAC = "`get` and `create` on pods/portforward"


class KubernetesProvider(Provider):
    name = "kubernetes"
    title = TITLE
    summary = "pods of a job (pytorchjob/NAME, job/NAME, a pod name or prefix) via the API server"
    capabilities = frozenset({Capability.OUT_OF_BAND_READINESS, Capability.REDISCOVERY, Capability.EXEC})
    keepalive_interval: ClassVar[float] = 20.0
    # A probe is an exec (a websocket and a process in the pod): 128 pods probed every 5 s cost an idle attach
    # 13 % of a core. Pods that change are told by the watch; only a rank dying inside a running pod waits
    # for the next probe, or for a debugger to connect to it (which makes its pod hot again at once).
    settled_probe_max: ClassVar[float] = 60.0
    options = OPTIONS

    def __init__(self, config: ProviderConfig):
        super().__init__(config)
        from dbgfwd.providers.kubernetes import spec as S

        self.specs = tuple(S.parse_target(t) for t in config.targets)
        self._cluster = None
        self._lock = threading.Lock()
        self._current: dict[str, object] = {}  # slot key -> PodRef filling it now
        self._known_uids: dict[str, str] = {}  # slot key -> pod uid at the last discovery
        self._roots: dict[str, str] = {}  # slot key -> cwd seen in a marker (when no workingDir)
        self._streams: "weakref.WeakSet" = weakref.WeakSet()
        self._watch = None
        self._warned: set[str] = set()

    # ---- selection ----

    @classmethod
    def availability(cls) -> Availability:
        try:
            import kubernetes  # noqa: F401
        except ImportError as exc:
            return Availability(False, f"the kubernetes python client is missing ({exc.name}): "
                                       "pip install kubernetes")
        return Availability(True)

    @classmethod
    def claims(cls, config: ProviderConfig) -> bool:
        from dbgfwd.providers.kubernetes.spec import looks_like_workload

        return super().claims(config) or any(looks_like_workload(t) for t in config.targets)

    # ---- discovery ----

    @property
    def ranks_per_pod(self) -> int | None:
        return self.config.opt("ranks_per_pod") or self.config.ranks_per_node

    def cluster(self):
        if self._cluster is None:
            if not self.availability().ok:
                raise ProviderUnavailable(self.availability().reason)
            from dbgfwd.providers.kubernetes.cluster import Cluster

            self._cluster = Cluster(self.config.opt("kubeconfig"), self.config.opt("context"),
                                    self.config.opt("namespace"))
        return self._cluster

    def discover(self) -> Discovery:
        from dbgfwd.providers.kubernetes import discovery as D

        cluster = self.cluster()
        selector = self.config.opt("selector")
        if not self.specs and not selector:
            from dbgfwd.errors import UsageError

            raise UsageError("name the pods to attach to",
                             hint="give a pod name or prefix, a workload like pytorchjob/NAME, or -l SELECTOR")
        pods = D.find_pods(cluster, self.specs, selector)
        if not pods:
            raise D.not_found(self.specs, selector, cluster, bool(self.config.opt("namespace")))
        targets = D.build_targets(pods, self.config.opt("container"), self.ranks_per_pod,
                                  self.config.base_port, self._roots)
        self._note_replacements(targets)
        with self._lock:
            for t in targets:
                self._current[t.key] = t.handle
        self._start_watch()
        return Discovery(tuple(targets), cluster.ref.where())

    def _note_replacements(self, targets: list[Target]) -> None:
        """Log pod replacements; a whole-job restart (every slot's pod new) is one line, not N."""
        new = {t.key: t.handle.uid for t in targets}
        replaced = [k for k, uid in new.items() if k in self._known_uids and self._known_uids[k] != uid]
        if replaced and len(replaced) == len(self._known_uids) > 1:
            log.warning("the whole job was restarted: all %d pods are new; ports stay the same", len(replaced))
        else:
            for key in replaced:
                log.warning("%s: pod replaced (now %s); its local ports stay the same", key,
                            next(t.handle.name for t in targets if t.key == key))
        self._known_uids = new

    # ---- watch: the current pod of each slot between discoveries ----

    def _start_watch(self) -> None:
        if self._watch is None or not self._watch.alive:
            from dbgfwd.providers.kubernetes.watch import PodWatch

            self._watch = PodWatch(self.cluster(), self._watch_selector(), self._on_pod_event)
            self._watch.start()

    def _watch_selector(self) -> str | None:
        from dbgfwd.providers.kubernetes.discovery import combine

        sels = {s.label_selector() for s in self.specs}
        only = next(iter(sels)) if len(sels) == 1 else None
        return combine(only, self.config.opt("selector"))

    def _on_pod_event(self, kind: str, pod: dict) -> None:
        from dbgfwd.providers.kubernetes import discovery as D
        from dbgfwd.providers.kubernetes import spec as S

        slot = S.slot_of(pod, self.config.opt("container"))
        with self._lock:
            if slot.key not in self._current:
                return  # not one of ours (new slots are picked up by the next discover())
            current = self._current[slot.key]
            uid = S.meta(pod).get("uid", "")
            if kind == "DELETED" or not D.is_running(pod):
                if current is not None and current.uid == uid:
                    self._current[slot.key] = D.PodRef(current.name, uid, current.container, False)
                return
            cont = S.container(pod, self.config.opt("container")) or {}
            self._current[slot.key] = D.PodRef(S.pod_name(pod), uid, cont.get("name"), True)

    def _pod_for(self, target: Target):
        with self._lock:
            return self._current.get(target.key) or target.handle

    # ---- streams ----

    def open_stream(self, target: Target, port: int, timeout: float) -> Stream:
        from dbgfwd.providers.kubernetes.portforward import PortForwardStream
        from dbgfwd.providers.kubernetes.wsconnect import open_ws

        ref = self._pod_for(target)
        if ref is None or not ref.running:
            raise UpstreamError(f"{target.name}: no running pod for this slot yet", retryable=True)
        ws = open_ws(self.cluster(), ref.name, "portforward", [("ports", str(port))], timeout,
                     "port-forward to", PORTFORWARD_RBAC)
        stream = PortForwardStream(ws, port, ref.name)
        try:
            stream.wait_ready(timeout)
        except BaseException:
            stream.close()  # a protocol error or a timeout must not leak the websocket
            raise
        self._streams.add(stream)
        return stream

    def run(self, target: Target, command: str, timeout: float, stdin: bytes | None = None) -> str:
        from dbgfwd.providers.kubernetes import podexec

        ref = self._pod_for(target)
        if ref is None or not ref.running:
            raise UpstreamError(f"{target.name} has no running pod")
        return podexec.run(self.cluster(), ref.name, ref.container, ["sh", "-c", command], timeout,
                           stdin=stdin).stdout

    def probe(self, target: Target) -> ProbeResult | None:
        from dbgfwd.providers.kubernetes import podexec

        ref = self._pod_for(target)
        if ref is None or not ref.running:
            return ProbeResult()
        try:
            result = podexec.run(self.cluster(), ref.name, ref.container, ["sh", "-c", probe_command()])
        except UpstreamError as exc:
            if not exc.retryable and exc.message not in self._warned:
                self._warned.add(exc.message)
                log.warning("readiness through exec unavailable: %s (%s)", exc.message, exc.hint or "")
            return None if not exc.retryable else ProbeResult()
        if not result.stdout and not result.ok:
            msg = result.status.get("message") or result.stderr.strip() or "no output"
            if target.key not in self._warned:
                self._warned.add(target.key)
                log.warning("%s: readiness probe failed in pod %s: %s", target.name, ref.name, msg[:200])
            return None
        probed = parse_probe_output(result.stdout)
        if target.remote_root is None:
            cwd = next((m.cwd for m in probed.markers if m.cwd), None)
            if cwd:
                self._roots[target.key] = cwd
        return probed

    def keepalive(self) -> None:
        for stream in list(self._streams):
            if stream.alive:
                stream.ping()
        if self._watch is not None and not self._watch.alive and self._current:
            try:
                self._start_watch()
            except DbgfwdError as exc:
                log.info("pod watch not restarted: %s", exc.message)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        for stream in list(self._streams):
            stream.close()
