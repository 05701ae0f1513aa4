"""Target specs, slots (stable keys, master-first order) and name resolution, on pod JSON."""

import pytest

from dbgfwd.errors import UsageError
from dbgfwd.providers.base import ProviderConfig
from dbgfwd.providers.kubernetes import KubernetesProvider
from dbgfwd.providers.kubernetes import spec as S


def pod(name, labels=None, annotations=None, env=None, owner=None, uid="u"):
    meta = {"name": name, "uid": uid, "labels": labels or {}, "annotations": annotations or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1]}]
    return {"metadata": meta, "spec": {"containers": [
        {"name": "main", "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}]}}


def kf(job, rtype, idx, **kw):
    return pod(f"{job}-{rtype}-{idx}", {S.KF_JOB: job, S.KF_REPLICA_TYPE: rtype, S.KF_REPLICA_INDEX: str(idx)}, **kw)


def test_parse_target_kinds_and_errors():
    assert S.parse_target("pytorchjob/train") == S.TargetSpec("pytorchjob", "train", True)
    assert S.parse_target("sts/db") == S.TargetSpec("statefulset", "db", True)
    assert S.parse_target("ml-dev-env") == S.TargetSpec("pod", "ml-dev-env", False)
    with pytest.raises(UsageError, match="unknown workload kind 'cronjob'"):
        S.parse_target("cronjob/x")
    with pytest.raises(UsageError, match="not a valid Kubernetes name"):
        S.parse_target("job/Bad_Name")


def test_pytorchjob_master_first_and_keys_ignore_pod_names():
    master, w0, w1 = kf("x", "master", 0), kf("x", "worker", 0), kf("x", "worker", 1)
    slots = [S.slot_of(p) for p in (w1, master, w0)]
    assert [(s.key, s.node_index) for s in slots] == [
        ("pytorchjob/x/worker-1", 2), ("pytorchjob/x/master-0", 0), ("pytorchjob/x/worker-0", 1)]
    # a recreated worker (new pod name and uid, same replica index) keeps its slot
    again = kf("x", "worker", 1, uid="other")
    again["metadata"]["name"] = "x-worker-1-retry"
    assert S.slot_of(again).key == "pytorchjob/x/worker-1"


def test_env_rank_wins_over_labels():
    p = kf("x", "worker", 0, env={"RANK": "5"})
    assert S.slot_of(p).node_index == 5


def test_indexed_job_jobset_lws_mpijob_slots():
    job = pod("j-3-abcde", {S.JOB_NAME: "j"}, {S.COMPLETION_INDEX: "3"})
    assert S.slot_of(job) == S.Slot("job/j/3", 3, "3")
    js = pod("js-w-1-0-x", {S.JS_NAME: "js", S.JS_REPLICATED_JOB: "w", S.JS_GLOBAL_INDEX: "1"},
             {S.COMPLETION_INDEX: "0"})
    assert S.slot_of(js).key == "jobset/js/w-1-0" and S.slot_of(js).node_index == 1
    lws = pod("l-1-2", {S.LWS_NAME: "l", S.LWS_GROUP: "1", S.LWS_WORKER: "2"}, {S.LWS_SIZE: "4"})
    assert S.slot_of(lws) == S.Slot("lws/l/1-2", 6, "1-2")
    launcher = pod("m-launcher", {S.KF_JOB: "m", S.KF_JOB_ROLE: "launcher"})
    worker = pod("m-worker-2", {S.KF_JOB: "m", S.KF_JOB_ROLE: "worker", S.KF_REPLICA_INDEX: "2"})
    spec = S.TargetSpec("mpijob", "m", True)
    assert not S.matches(spec, launcher) and S.matches(spec, worker)
    assert S.slot_of(worker).node_index == 2


def test_unknown_indices_follow_known_ones_in_name_order():
    slots = [S.Slot("a", 0, "a"), S.Slot("pod/c", None, "c"), S.Slot("pod/b", None, "b")]
    assert S.order_slots(slots, lambda s: s.key) == {"a": 0, "pod/b": 1, "pod/c": 2}


def test_bare_name_means_pod_then_workload_then_prefix():
    dep = [pod(f"ml-dev-env-7d9f-{s}", {"pod-template-hash": "7d9f"}, owner=("ReplicaSet", "ml-dev-env-7d9f"))
           for s in ("aaaaa", "bbbbb")]
    other = pod("ml-dev-env-2-x", {"app": "y"})
    assert [S.pod_name(p) for p in S.resolve_name("ml-dev-env-7d9f-aaaaa", dep)] == ["ml-dev-env-7d9f-aaaaa"]
    assert len(S.resolve_name("ml-dev-env", dep + [other])) == 2  # the deployment's pods
    assert S.resolve_name("nothing", dep) == []
    with pytest.raises(UsageError, match="several workloads"):
        S.resolve_name("ml", dep + [other])


def test_claims():
    claims = KubernetesProvider.claims
    assert claims(ProviderConfig(targets=("ml-dev-env",), options={"namespace": "nccl-test"}))
    assert claims(ProviderConfig(targets=("pytorchjob/x",)))
    assert claims(ProviderConfig(options={"selector": "app=train"}))
    assert not claims(ProviderConfig(targets=("node01",)))
    assert not claims(ProviderConfig())
