"""KubernetesProvider against the test apiserver, without the engine: discover, probe, streams."""

import os
import subprocess
import sys

import pytest

from dbgfwd.errors import AuthError, ExitCode, NotFoundError, UpstreamError
from dbgfwd.providers.base import ProviderConfig
from dbgfwd.providers.kubernetes import KubernetesProvider
from tests.conftest import ROOT
from tests.support import k8s_jobs
from tests.support.cli import wait_for

KF = "training.kubeflow.org/"


def provider(srv, *targets, kubeconfig=None, base_port=5678, **options):
    options.setdefault("kubeconfig", str(kubeconfig or srv.kubeconfig_path))
    return KubernetesProvider(ProviderConfig(targets=targets, options=options, base_port=base_port))


def roundtrip(stream, payload: bytes) -> bytes:
    stream.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = stream.recv(65536)
        assert chunk, f"stream ended after {len(got)} of {len(payload)} bytes"
        got += chunk
    return got


def test_seed_case_namespace_and_name_prefix(k8s):
    # `dbgfwd attach --namespace nccl-test ml-dev-env`: the pods of deployment ml-dev-env
    for suffix in ("abcde", "fghij"):
        k8s.add_pod(f"ml-dev-env-6f7c9-{suffix}", "nccl-test", labels={"app": "ml", "pod-template-hash": "6f7c9"},
                    owner=("ReplicaSet", "ml-dev-env-6f7c9"), working_dir="/workspace", start=suffix == "abcde")
    k8s.add_pod("other-0", "nccl-test", start=False)
    p = provider(k8s, "ml-dev-env", namespace="nccl-test")
    found = p.discover()
    assert "namespace nccl-test" in found.where
    assert [(t.name, t.running, t.status) for t in found.targets] == [
        ("ml-dev-env-6f7c9-abcde", True, "Running"), ("ml-dev-env-6f7c9-fghij", False, "Pending")]
    assert found.targets[0].remote_root == "/workspace"
    p.close()


def test_namespace_defaults_to_the_context_and_not_found_says_where(k8s, tmp_path):
    k8s.add_pod("train-0", "team-a", start=False)
    kc = k8s.kubeconfig(tmp_path / "kc-ns", namespace="team-a")
    assert [t.name for t in provider(k8s, "train-0", kubeconfig=kc).discover().targets] == ["train-0"]
    with pytest.raises(NotFoundError) as exc:
        provider(k8s, "pytorchjob/nope", kubeconfig=kc).discover()
    assert "namespace team-a" in exc.value.message and "-n/--namespace" in exc.value.hint


def test_pytorchjob_ranks_from_ranks_per_pod(k8s):
    for rtype, idx in (("worker", 1), ("master", 0), ("worker", 0)):
        k8s.add_pod(f"x-{rtype}-{idx}", "ml", labels={KF + "job-name": "x", KF + "replica-type": rtype,
                                                   KF + "replica-index": str(idx)}, start=False)
    targets = provider(k8s, "pytorchjob/x", namespace="ml", ranks_per_pod=2).discover().targets
    assert [(t.name, t.rank_base, [r.rank for r in t.ranks]) for t in targets] == [
        ("x-master-0", 0, [0, 1]), ("x-worker-0", 2, [2, 3]), ("x-worker-1", 4, [4, 5])]
    # Each pod's ranks listen on base port + local rank, the same ports in every pod.
    assert {t.name: [(r.local_rank, r.port) for r in t.ranks] for t in targets} == {
        name: [(0, 5678), (1, 5679)] for name in ("x-master-0", "x-worker-0", "x-worker-1")}
    other = provider(k8s, "pytorchjob/x", namespace="ml", ranks_per_pod=2, base_port=7000).discover().targets
    assert [r.port for r in other[0].ranks] == [7000, 7001]


def test_discovery_auth_errors(k8s, tmp_path):
    k8s.add_pod("p", start=False)
    bad = k8s.kubeconfig(tmp_path / "kc-bad", token="expired-token")
    with pytest.raises(AuthError) as exc:
        provider(k8s, "p", kubeconfig=bad).discover()
    assert "401" in exc.value.message and "expired" in exc.value.message and "oc login" in exc.value.hint
    assert "expired-token" not in exc.value.message + exc.value.hint
    k8s.deny("list", "pods")
    with pytest.raises(AuthError) as exc:
        provider(k8s, "p").discover()
    assert "cannot list" in exc.value.message and "`list`" in exc.value.hint
    assert exc.value.code == ExitCode.AUTH


@pytest.mark.parametrize("base64", [False, True])
def test_stream_roundtrip_refused_and_pings(k8s, base64):
    k8s.prefer_base64 = base64
    pod = k8s_jobs.echo_pod(k8s, "echo-0")
    p = provider(k8s, "echo-0")
    target = p.discover().targets[0]
    k8s_jobs.wait_listening(pod, 7000)
    stream = p.open_stream(target, 7000, 10)
    payload = os.urandom(1_000_000)
    assert roundtrip(stream, payload) == payload
    p.keepalive()  # pings every live stream
    assert roundtrip(stream, b"after ping") == b"after ping"
    stream.close()
    wait_for(lambda: k8s.stats.pings >= 1, 10, "the ping to reach the server")
    with pytest.raises(UpstreamError) as exc:
        p.open_stream(target, 7001, 10)
    assert exc.value.retryable and "connection refused" in exc.value.message
    assert k8s.stats.violations == []
    p.close()


def test_stream_forbidden_and_expired(k8s):
    pod = k8s_jobs.echo_pod(k8s, "echo-0")
    p = provider(k8s, "echo-0")
    target = p.discover().targets[0]
    k8s_jobs.wait_listening(pod, 7000)
    k8s.deny("create", "pods/portforward")
    with pytest.raises(UpstreamError) as exc:
        p.open_stream(target, 7000, 10)
    assert not exc.value.retryable and exc.value.code == ExitCode.AUTH
    assert "pods/portforward" in exc.value.message and "`create` on pods/portforward" in exc.value.hint
    k8s.denied.clear()
    k8s.token = "rotated"  # the kubeconfig's token is no longer valid
    with pytest.raises(UpstreamError) as exc:
        p.open_stream(target, 7000, 10)
    assert not exc.value.retryable and exc.value.code == ExitCode.AUTH and "expired" in exc.value.message
    p.close()


def test_watch_moves_a_slot_to_the_replacement_pod(k8s):
    labels = {KF + "job-name": "x", KF + "replica-type": "worker", KF + "replica-index": "0"}
    script = k8s_jobs.app_dir(k8s) / "echo.py"
    script.write_text(k8s_jobs.ECHO)
    cmd = [k8s_jobs.sys.executable, str(script), "7000"]
    k8s.add_pod("x-worker-0", labels=labels, command=cmd)
    p = provider(k8s, "pytorchjob/x")
    target = p.discover().targets[0]
    k8s.delete_pod("x-worker-0")
    wait_for(lambda: not p._pod_for(target).running, 10, "the watch to see the deletion")
    with pytest.raises(UpstreamError) as exc:
        p.open_stream(target, 7000, 5)
    assert exc.value.retryable
    new = k8s.add_pod("x-worker-0-r1", labels=labels, command=cmd)
    wait_for(lambda: p._pod_for(target).name == "x-worker-0-r1", 10, "the watch to see the new pod")
    k8s_jobs.wait_listening(new, 7000)
    stream = p.open_stream(target, 7000, 10)  # the old Target still reaches the slot's new pod
    assert roundtrip(stream, b"hello") == b"hello"
    assert k8s.stats.portforward == {"x-worker-0-r1": 1}
    stream.close()
    p.close()


def test_whole_job_restart_is_one_event(k8s, caplog):
    def gang(suffix):
        for i in range(3):
            k8s.add_pod(f"j-{i}-{suffix}", labels={"batch.kubernetes.io/job-name": "j"},
                        annotations={"batch.kubernetes.io/job-completion-index": str(i)}, start=False)

    gang("aaaaa")
    p = provider(k8s, "job/j")
    before = p.discover().targets
    for i in range(3):
        k8s.delete_pod(f"j-{i}-aaaaa")
    gang("bbbbb")
    with caplog.at_level("WARNING", logger="dbgfwd.providers.kubernetes"):
        after = p.discover().targets
    assert [t.key for t in after] == [t.key for t in before] == ["job/j/0", "job/j/1", "job/j/2"]
    assert [t.detail["pod"] for t in after] == ["j-0-bbbbb", "j-1-bbbbb", "j-2-bbbbb"]
    lines = [r.getMessage() for r in caplog.records if r.name == "dbgfwd.providers.kubernetes"]
    assert lines == ["the whole job was restarted: all 3 pods are new; ports stay the same"]
    p.close()


def test_openshift_style_contexts_and_projects(k8s, tmp_path):
    # `oc login` writes contexts named project/server/user with the project as namespace
    import json

    k8s.add_pod("train-0", "ml-project", start=False)
    cfg = json.loads(k8s.kubeconfig(tmp_path / "kc").read_text())
    cfg["contexts"].append({"name": "ml-project/api-crc-testing:6443/developer",
                            "context": {"cluster": "test", "user": "dev", "namespace": "ml-project"}})
    path = tmp_path / "kc-oc"
    path.write_text(json.dumps(cfg))
    p = provider(k8s, "train-0", kubeconfig=path, context="ml-project/api-crc-testing:6443/developer")
    found = p.discover()
    assert [t.name for t in found.targets] == ["train-0"] and "namespace ml-project" in found.where
    from dbgfwd.errors import UsageError

    with pytest.raises(UsageError) as exc:
        provider(k8s, "train-0", kubeconfig=path, context="nope").discover()
    assert "ml-project/api-crc-testing:6443/developer" in exc.value.message


def test_pending_pod_is_picked_up_when_it_starts(k8s):
    k8s.add_pod("solo-0", start=False)
    p = provider(k8s, "solo-0")
    (before,) = p.discover().targets
    assert not before.running and before.status == "Pending"
    assert p.probe(before).markers == ()  # not running: not ready, and no exec attempted
    assert k8s.stats.exec == {}
    k8s.start_pod("solo-0")
    (after,) = p.discover().targets
    assert after.running and after.key == before.key
    p.close()


def test_a_frame_that_is_not_base64_closes_the_stream_cleanly():
    """A hostile or broken server on the base64 subprotocol: one clear retryable error, websocket closed,
    nothing raised but that (it used to escape as binascii.Error and leak the socket)."""
    import base64
    import socket as socketlib
    import struct

    from dbgfwd.errors import UpstreamError
    from dbgfwd.net.websocket import WebSocket
    from dbgfwd.providers.kubernetes.portforward import PortForwardStream
    from dbgfwd.providers.kubernetes.wsconnect import V4_BASE64

    ours, server = socketlib.socketpair()

    def text_frame(payload: bytes) -> bytes:  # server frames are not masked
        return bytes([0x81, len(payload)]) + payload

    prefix = base64.b64encode(struct.pack("<H", 5678))
    server.sendall(text_frame(b"0" + prefix) + text_frame(b"1" + prefix) + text_frame(b"0!!not base64!!"))
    stream = PortForwardStream(WebSocket(ours, subprotocol=V4_BASE64), 5678, "pod-0")
    with pytest.raises(UpstreamError) as info:
        stream.wait_ready(5)
    assert "not base64" in info.value.message and info.value.retryable
    server.settimeout(5)
    assert server.recv(1) == b"\x88"  # a close frame went out...
    assert ours.fileno() == -1  # ...and the websocket is shut
    server.close()


def test_a_selector_the_server_rejects_is_a_usage_error(k8s):
    """The API server answers 400 to a bad label selector: the user's input is wrong, not the server."""
    from dbgfwd.errors import UsageError

    with pytest.raises(UsageError) as info:
        provider(k8s, selector="app in (a", namespace="ns").discover()
    assert info.value.code == ExitCode.USAGE and "unable to parse" in info.value.message
    assert "--selector" in info.value.hint


def test_probes_close_their_exec_sockets_without_waiting_for_garbage_collection(k8s):
    """The server closes each exec websocket first; closing ours afterwards must still close the socket
    (websocket-client's close() returned early once it answered the server's close). Counted precisely: socket
    fds of this process whose connection is over (in no socket table any more) but that are still open. The
    in-process test server's own live sockets do not count."""
    import gc

    k8s.add_pod("solo-0")
    p = provider(k8s, "solo-0")
    (target,) = p.discover().targets
    gc.collect()  # what earlier tests left for the garbage collector is not counted against these probes
    gc.disable()
    try:
        before = _orphan_sockets()
        for _ in range(20):
            p.probe(target)
        left = _orphan_sockets() - before
        assert left <= 2, f"{left} sockets still open after their connection ended (20 probes)"
    finally:
        gc.enable()
        p.close()


def _orphan_sockets() -> int:
    from tests.support.procinfo import socket_inodes

    mine = socket_inodes(os.getpid())
    known = set()
    for table in ("tcp", "tcp6", "udp", "udp6", "unix", "raw", "raw6", "netlink", "packet"):
        try:
            with open(f"/proc/net/{table}") as fh:
                lines = fh.readlines()[1:]
        except OSError:
            continue
        column = 6 if table == "unix" else 9 if table not in ("netlink", "packet") else -1
        for line in lines:
            parts = line.split()
            if parts:
                known.add(parts[column] if column >= 0 else parts[-1])
    return len(mine - known)


def test_selector_and_container_choose_the_pods_and_where_the_ranks_run(k8s):
    """-l picks the pods; --container (else the default-container annotation, else the first container)
    is where roots, rank env and the exec probe come from. A sidecar comes first in these pods."""
    from tests.support.ranks import write_program

    program = write_program(k8s_jobs.app_dir(k8s))
    for i in range(2):
        k8s.add_pod(f"train-{i}", labels={"app": "train"}, sidecars=("envoy",), working_dir=str(program.parent),
                    env={"RANK": str(i), "PYTHONPATH": k8s_jobs.REPO},
                    command=k8s_jobs.ranks_command(program, 1))
    k8s.add_pod("other-0", labels={"app": "other"}, start=False)

    p = provider(k8s, selector="app=train", container="main")
    targets = p.discover().targets
    assert [(t.name, t.detail["container"], t.remote_root) for t in targets] == [
        ("train-0", "main", str(program.parent)), ("train-1", "main", str(program.parent))]
    wait_for(lambda: all(len(getattr(p.probe(t), "markers", ())) == 1 for t in targets),
             what="markers read in container main")
    assert set(k8s.stats.exec_containers) == {"main"}
    p.close()

    # no --container: the first container, as kubectl does (so the sidecar's root, and no markers there)
    (first,) = provider(k8s, "train-0").discover().targets
    assert (first.detail["container"], first.remote_root) == ("envoy", "/etc/envoy")
    k8s.pods[("default", "train-1")].obj["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] = "main"
    (annotated,) = provider(k8s, "train-1").discover().targets
    assert (annotated.detail["container"], annotated.remote_root) == ("main", str(program.parent))

    with pytest.raises(NotFoundError) as exc:
        provider(k8s, selector="app=train", container="trainer").discover()
    assert "has no container 'trainer' (it has: envoy, main)" in exc.value.message
    assert exc.value.code == ExitCode.NOT_FOUND and "--container" in exc.value.hint


def test_probes_and_streams_work_past_descriptor_1024(k8s):
    """An attach of 1024 ranks holds a listener each before any debugger connects, so every socket it opens
    afterwards is numbered past 1024, where select() refuses to look: each probe failed ("filedescriptor out of
    range") and each stream was taken for ended, so no rank of a 128-pod job ever became ready."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1400) if hard == resource.RLIM_INFINITY
                                                 else min(max(soft, 1400), hard), hard))
    filler = []
    try:
        while len(filler) < 1100:  # every number up to ~1100 taken: what the test opens next is past FD_SETSIZE
            filler.append(os.open(os.devnull, os.O_RDONLY))
        pod = k8s_jobs.echo_pod(k8s, "echo-high")
        p = provider(k8s, "echo-high")
        target = p.discover().targets[0]
        k8s_jobs.wait_listening(pod, 7000)
        probed = p.probe(target)
        assert probed is not None and probed.tcp_known and probed.is_listening(7000)
        stream = p.open_stream(target, 7000, 10)
        assert stream._ws.sock.fileno() > 1024
        assert roundtrip(stream, b"past 1024") == b"past 1024"
        stream.close()
        p.close()
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_listing_and_watching_pods_leave_the_whole_core_api_unimported(k8s):
    """CoreV1Api is one module holding every core API call, about a second to import; dbgfwd needs one call."""
    k8s.add_pod("p-0", labels={"app": "x"})
    code = (
        "import sys\n"
        "from dbgfwd.providers.kubernetes.cluster import Cluster\n"
        f"c = Cluster({str(k8s.kubeconfig_path)!r}, None, 'default')\n"
        "pods, rv = c.list_pods(label_selector='app=x')\n"
        "events = list(c.watch_pods('app=x', rv, timeout_seconds=1))\n"
        "print(len(pods), rv != '', 'kubernetes.client.api.core_v1_api' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.stdout.split() == ["1", "True", "False"], out.stderr[-2000:]
