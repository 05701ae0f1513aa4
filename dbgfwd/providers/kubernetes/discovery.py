"""Pods the user's spec names -> Targets with stable keys, node indices and rank bases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from dbgfwd.errors import NotFoundError
from dbgfwd.plan.layout import node_ranks
from dbgfwd.providers.base import Target
from dbgfwd.providers.kubernetes import spec as S
from dbgfwd.providers.kubernetes.cluster import Cluster


@dataclass(frozen=True)
class PodRef:
    """What open_stream/probe need to reach one pod (the Target.handle)."""

    name: str
    uid: str
    container: str | None
    running: bool


def combine(*selectors: str | None) -> str | None:
    parts = [s for s in selectors if s]
    return ",".join(parts) if parts else None


def find_pods(cluster: Cluster, specs: Sequence[S.TargetSpec], selector: str | None) -> list[dict]:
    """Every pod the specs (and the -l selector) name, each once."""
    found: dict[str, dict] = {}
    all_pods: list[dict] | None = None

    def everything() -> list[dict]:
        nonlocal all_pods
        if all_pods is None:
            all_pods = cluster.list_pods(selector)[0]
        return all_pods

    if not specs:
        for pod in everything():
            found[S.pod_name(pod)] = pod
    for spec in specs:
        if spec.kind == "pod":
            pods = ([p for p in everything() if S.pod_name(p) == spec.name] if spec.explicit_kind
                    else S.resolve_name(spec.name, everything()))
        elif spec.label_selector():
            pods = cluster.list_pods(combine(spec.label_selector(), selector))[0]
            if not pods and spec.kind == "job":  # clusters before 1.27 only set the legacy label
                pods = cluster.list_pods(combine(f"{S.JOB_NAME_LEGACY}={spec.name}", selector))[0]
            pods = [p for p in pods if S.matches(spec, p)]
        else:
            pods = [p for p in everything() if S.matches(spec, p)]
        for pod in pods:
            found[S.pod_name(pod)] = pod
    return list(found.values())


def not_found(specs: Sequence[S.TargetSpec], selector: str | None, cluster: Cluster,
              namespace_given: bool) -> NotFoundError:
    what = " ".join(s.text for s in specs) or "any pod"
    if selector:
        what += f" with labels {selector}"
    hint = ("check the name (`kubectl get pods -n " + cluster.ref.namespace + "`)" if namespace_given
            else "the namespace came from the kubeconfig context; pass -n/--namespace (an OpenShift project)")
    return NotFoundError(f"no pods match {what} in {cluster.ref.where()}", hint=hint)


def _pick(pods: Iterable[dict]) -> dict:
    """Of several pods for one slot (old one terminating, new one starting), the live one."""
    def score(pod: dict):
        phase = (pod.get("status") or {}).get("phase", "")
        terminating = bool(S.meta(pod).get("deletionTimestamp"))
        return (not terminating, phase == "Running", S.meta(pod).get("creationTimestamp") or "")
    return max(pods, key=score)


def is_running(pod: dict) -> bool:
    phase = (pod.get("status") or {}).get("phase", "")
    return phase == "Running" and not S.meta(pod).get("deletionTimestamp")


def phase_of(pod: dict) -> str:
    if S.meta(pod).get("deletionTimestamp"):
        return "Terminating"
    return (pod.get("status") or {}).get("phase", "Unknown") or "Unknown"


def build_targets(pods: Sequence[dict], container: str | None, ranks_per_pod: int | None,
                  base_port: int, remote_roots: dict[str, str] | None = None) -> list[Target]:
    """One Target per slot, sorted by node index (master first)."""
    by_key: dict[str, list[tuple[S.Slot, dict]]] = {}
    for pod in pods:
        slot = S.slot_of(pod, container)
        by_key.setdefault(slot.key, []).append((slot, pod))
    chosen = {key: _pick(p for _, p in items) for key, items in by_key.items()}
    slots = {key: next(s for s, p in by_key[key] if p is chosen[key]) for key in chosen}
    order = S.order_slots(list(slots.values()), lambda s: s.key)
    targets = []
    for key, pod in chosen.items():
        slot = slots[key]
        node_index = order[key]
        cont = S.container(pod, container) or {}
        if container and not cont:
            names = [c.get("name") for c in S.pod_containers(pod)]
            raise NotFoundError(f"pod {S.pod_name(pod)} has no container {container!r} (it has: {', '.join(names)})",
                                hint="name one of them with --container, or leave it out for the pod's default "
                                     "container")
        work = S.workload_of(pod)
        name = S.pod_name(pod) if slot.key.startswith("pod/") or work is None else f"{work.name}-{slot.label}"
        rank_base = node_index * ranks_per_pod if ranks_per_pod else None
        ranks = node_ranks(rank_base, ranks_per_pod, base_port) if ranks_per_pod else ()
        status = pod.get("status") or {}
        detail = {"pod": S.pod_name(pod), "phase": phase_of(pod)}
        if status.get("podIP"):
            detail["ip"] = status["podIP"]
        if (pod.get("spec") or {}).get("nodeName"):
            detail["node"] = pod["spec"]["nodeName"]
        if cont.get("name"):
            detail["container"] = cont["name"]
        if work is not None:
            detail["workload"] = work.text
        running = is_running(pod)
        root = cont.get("workingDir") or (remote_roots or {}).get(key)
        targets.append(Target(
            key=key, name=name, node_index=node_index, rank_base=rank_base, ranks=ranks,
            running=running, status=phase_of(pod), remote_root=root, detail=detail,
            handle=PodRef(S.pod_name(pod), S.meta(pod).get("uid", ""), cont.get("name"), running)))
    return sorted(targets, key=lambda t: (t.node_index, t.key))
