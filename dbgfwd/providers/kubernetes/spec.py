"""What the user named (a pod, a name prefix, `kind/NAME`) and which pods that means.

Pure functions over pod dicts (the JSON the API server returns), so they test without a cluster.
Each pod of a workload gets a *slot*: a stable key (workload + index, never the pod name when the
workload has indices) and a node index (its position in the job, master first). A pod recreated for
the same index keeps its slot, which is what lets a local port survive pod replacement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from dbgfwd.errors import UsageError

Pod = Mapping[str, Any]

JOB_NAME = "batch.kubernetes.io/job-name"
JOB_NAME_LEGACY = "job-name"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
KF_JOB = "training.kubeflow.org/job-name"
KF_REPLICA_TYPE = "training.kubeflow.org/replica-type"
KF_REPLICA_INDEX = "training.kubeflow.org/replica-index"
KF_JOB_ROLE = "training.kubeflow.org/job-role"
JS_NAME = "jobset.sigs.k8s.io/jobset-name"
JS_REPLICATED_JOB = "jobset.sigs.k8s.io/replicatedjob-name"
JS_JOB_INDEX = "jobset.sigs.k8s.io/job-index"
JS_GLOBAL_INDEX = "jobset.sigs.k8s.io/job-global-index"
LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
LWS_GROUP = "leaderworkerset.sigs.k8s.io/group-index"
LWS_WORKER = "leaderworkerset.sigs.k8s.io/worker-index"
LWS_SIZE = "leaderworkerset.sigs.k8s.io/size"
STS_POD_INDEX = "apps.kubernetes.io/pod-index"
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"

# Env vars in a pod spec that carry the node's rank (set by the training operators), best first.
NODE_RANK_ENV = ("NODE_RANK", "PET_NODE_RANK", "GROUP_RANK", "RANK", "JOB_COMPLETION_INDEX")

WORKLOAD_KINDS = {
    "job": "job", "jobs": "job", "job.batch": "job",
    "pytorchjob": "pytorchjob", "pytorchjobs": "pytorchjob",
    "mpijob": "mpijob", "mpijobs": "mpijob",
    "jobset": "jobset", "jobsets": "jobset",
    "lws": "lws", "leaderworkerset": "lws", "leaderworkersets": "lws",
    "deployment": "deployment", "deploy": "deployment", "deployments": "deployment",
    "statefulset": "statefulset", "sts": "statefulset", "statefulsets": "statefulset",
    "pod": "pod", "pods": "pod", "po": "pod",
}
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@dataclass(frozen=True)
class TargetSpec:
    kind: str  # "pod" (a name or name prefix), or a workload kind from WORKLOAD_KINDS
    name: str
    explicit_kind: bool = False  # typed as pod/NAME: no prefix matching

    @property
    def text(self) -> str:
        return f"{self.kind}/{self.name}" if self.kind != "pod" or self.explicit_kind else self.name

    def label_selector(self) -> str | None:
        """Server-side selector narrowing the list (None: filter client side)."""
        return {
            "job": f"{JOB_NAME}={self.name}",
            "pytorchjob": f"{KF_JOB}={self.name}",
            "mpijob": f"{KF_JOB}={self.name}",
            "jobset": f"{JS_NAME}={self.name}",
            "lws": f"{LWS_NAME}={self.name}",
        }.get(self.kind)


def looks_like_workload(text: str) -> bool:
    kind, sep, _ = text.partition("/")
    return bool(sep) and kind.lower() in WORKLOAD_KINDS


def parse_target(text: str) -> TargetSpec:
    text = text.strip()
    kind, sep, name = text.partition("/")
    if not sep:
        kind, name = "pod", text
    canon = WORKLOAD_KINDS.get(kind.lower())
    if canon is None:
        raise UsageError(f"unknown workload kind {kind!r} in {text!r}",
                         hint="use a pod name or one of job/, pytorchjob/, mpijob/, jobset/, lws/, "
                              "deployment/, statefulset/")
    if not _NAME_RE.match(name or ""):
        raise UsageError(f"{text!r} is not a valid Kubernetes name",
                         hint="names are lowercase letters, digits, '-' and '.'")
    return TargetSpec(canon, name, explicit_kind=bool(sep))


# ---- pod fields ----

def meta(pod: Pod) -> Mapping[str, Any]:
    return pod.get("metadata") or {}


def labels(pod: Pod) -> Mapping[str, str]:
    return meta(pod).get("labels") or {}


def annotations(pod: Pod) -> Mapping[str, str]:
    return meta(pod).get("annotations") or {}


def pod_name(pod: Pod) -> str:
    return meta(pod).get("name", "")


def owners(pod: Pod) -> list[tuple[str, str]]:
    return [(o.get("kind", ""), o.get("name", "")) for o in meta(pod).get("ownerReferences") or ()]


def _int(value: Any) -> int | None:
    try:
        out = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return out if out >= 0 else None


def pod_containers(pod: Pod) -> list[Mapping[str, Any]]:
    return (pod.get("spec") or {}).get("containers") or []


def container(pod: Pod, wanted: str | None) -> Mapping[str, Any] | None:
    """The container ranks run in: --container, the default-container annotation, else the first."""
    containers = pod_containers(pod)
    name = wanted or annotations(pod).get(DEFAULT_CONTAINER)
    if name:
        for c in containers:
            if c.get("name") == name:
                return c
        return None if wanted else (containers[0] if containers else None)
    return containers[0] if containers else None


def env_rank(pod: Pod, container_name: str | None) -> int | None:
    c = container(pod, container_name)
    env = {e.get("name"): e.get("value") for e in (c or {}).get("env") or () if "value" in e}
    for key in NODE_RANK_ENV:
        value = _int(env.get(key))
        if value is not None:
            return value
    return None


# ---- which pods a spec means ----

def matches(spec: TargetSpec, pod: Pod) -> bool:
    lab = labels(pod)
    name = pod_name(pod)
    if spec.kind == "pod":
        return name == spec.name
    if spec.kind == "job":
        return lab.get(JOB_NAME, lab.get(JOB_NAME_LEGACY)) == spec.name
    if spec.kind == "pytorchjob":
        return lab.get(KF_JOB) == spec.name
    if spec.kind == "mpijob":
        # The launcher only runs mpirun; the ranks live on the workers.
        return lab.get(KF_JOB) == spec.name and lab.get(KF_JOB_ROLE, "worker") != "launcher"
    if spec.kind == "jobset":
        return lab.get(JS_NAME) == spec.name
    if spec.kind == "lws":
        return lab.get(LWS_NAME) == spec.name
    if spec.kind == "deployment":
        return any(k == "ReplicaSet" and re.fullmatch(re.escape(spec.name) + r"-[a-z0-9]+", n)
                   for k, n in owners(pod))
    if spec.kind == "statefulset":
        return ("StatefulSet", spec.name) in owners(pod)
    return False


def workload_of(pod: Pod) -> TargetSpec | None:
    """The workload a pod belongs to, as far as its labels and owners say."""
    lab = labels(pod)
    if KF_JOB in lab:
        kind = "mpijob" if KF_JOB_ROLE in lab else "pytorchjob"
        return TargetSpec(kind, lab[KF_JOB], True)
    if JS_NAME in lab:
        return TargetSpec("jobset", lab[JS_NAME], True)
    if LWS_NAME in lab:
        return TargetSpec("lws", lab[LWS_NAME], True)
    job = lab.get(JOB_NAME, lab.get(JOB_NAME_LEGACY))
    if job:
        return TargetSpec("job", job, True)
    for kind, name in owners(pod):
        if kind == "StatefulSet":
            return TargetSpec("statefulset", name, True)
        if kind == "ReplicaSet" and "pod-template-hash" in lab and name.endswith("-" + lab["pod-template-hash"]):
            return TargetSpec("deployment", name[: -len(lab["pod-template-hash"]) - 1], True)
    return None


def resolve_name(name: str, pods: Sequence[Pod]) -> list[Pod]:
    """What a bare name means: the pod of that name; else the workload of that name; else the pods
    whose names start with `name-` when they all belong to one workload (`ml-dev-env` for the pods
    of deployment ml-dev-env). Raises UsageError when a prefix spans several workloads."""
    exact = [p for p in pods if pod_name(p) == name]
    if exact:
        return exact
    by_workload = [p for p in pods if (w := workload_of(p)) is not None and w.name == name]
    if by_workload:
        return by_workload
    prefixed = [p for p in pods if pod_name(p).startswith(name + "-")]
    groups = {(w.text if (w := workload_of(p)) else pod_name(p)) for p in prefixed}
    if len(groups) > 1:
        shown = ", ".join(sorted(groups)[:6])
        raise UsageError(f"{name!r} matches pods of several workloads: {shown}",
                         hint="name one of them (e.g. " + sorted(groups)[0] + ")")
    return prefixed


# ---- slots: stable key + position in the job ----

@dataclass(frozen=True)
class Slot:
    key: str
    node_index: int | None  # None: unknown from labels/env; ordered by name afterwards
    label: str  # short name shown to users ("master-0", "worker-1", "3")


def slot_of(pod: Pod, container_name: str | None = None) -> Slot:
    lab, ann = labels(pod), annotations(pod)
    work = workload_of(pod)
    env_index = env_rank(pod, container_name)
    name = pod_name(pod)
    if work is None:
        return Slot(f"pod/{name}", env_index, name)
    base = work.text
    if work.kind == "pytorchjob":
        rtype = (lab.get(KF_REPLICA_TYPE) or "worker").lower()
        idx = _int(lab.get(KF_REPLICA_INDEX)) or 0
        if env_index is None:
            # master-0 is node 0; workers follow it (the operator's own RANK assignment)
            env_index = idx if rtype == "master" else idx + 1
        return Slot(f"{base}/{rtype}-{idx}", env_index, f"{rtype}-{idx}")
    if work.kind == "mpijob":
        idx = _int(lab.get(KF_REPLICA_INDEX)) or 0
        return Slot(f"{base}/worker-{idx}", env_index if env_index is not None else idx, f"worker-{idx}")
    if work.kind == "jobset":
        rjob = lab.get(JS_REPLICATED_JOB, "")
        gidx = _int(lab.get(JS_GLOBAL_INDEX)) or _int(lab.get(JS_JOB_INDEX)) or 0
        cidx = _int(ann.get(COMPLETION_INDEX, lab.get(COMPLETION_INDEX))) or 0
        index = env_index
        if index is None and cidx == 0:
            index = gidx
        return Slot(f"{base}/{rjob}-{gidx}-{cidx}", index, f"{rjob}-{gidx}-{cidx}")
    if work.kind == "lws":
        group, worker = _int(lab.get(LWS_GROUP)) or 0, _int(lab.get(LWS_WORKER)) or 0
        size = _int(ann.get(LWS_SIZE, lab.get(LWS_SIZE)))
        index = env_index if env_index is not None else (group * size + worker if size else None)
        return Slot(f"{base}/{group}-{worker}", index, f"{group}-{worker}")
    if work.kind == "job":
        cidx = _int(ann.get(COMPLETION_INDEX, lab.get(COMPLETION_INDEX)))
        if cidx is None:  # non-indexed Job: pods are interchangeable, the pod is the slot
            return Slot(f"pod/{name}", env_index, name)
        return Slot(f"{base}/{cidx}", env_index if env_index is not None else cidx, str(cidx))
    if work.kind == "statefulset":
        idx = _int(lab.get(STS_POD_INDEX))
        if idx is None:
            tail = name.rsplit("-", 1)[-1]
            idx = _int(tail)
        return Slot(f"{base}/{idx}", env_index if env_index is not None else idx, name)
    return Slot(f"pod/{name}", env_index, name)  # deployment pods have no stable index


def order_slots(slots: Sequence[Slot], sort_name: Callable[[Slot], str]) -> dict[str, int]:
    """key -> node index: known indices kept; unknown ones follow, ordered by name."""
    out = {s.key: s.node_index for s in slots if s.node_index is not None}
    nxt = max(out.values(), default=-1) + 1
    for s in sorted((s for s in slots if s.node_index is None), key=sort_name):
        if s.key not in out:
            out[s.key] = nxt
            nxt += 1
    return out
