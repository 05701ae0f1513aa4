"""`dbgfwd attach` on a PyTorchJob-shaped pod set, end to end: real CLI, real debugpy, real DAP.

The API server and kubelet are the strict test server (tests/support/k8s_server.py); everything
else is what users run.
"""

import json
import os
import socket
import threading

from tests.support import cli, k8s_jobs, ranks
from tests.support.dap import DapClient, assert_session_ends, debug_round

REPO = k8s_jobs.REPO
ENV = k8s_jobs.ENV
attach = k8s_jobs.attach


def pod_of(ws, rank):
    s = cli.session(ws)
    key = next(r["target"] for r in s["ranks"] if r["rank"] == rank)
    t = next(t for t in s["targets"] if t["key"] == key)
    return t["detail"].get("pod") if t["running"] else None


def replace_worker(k8s, job, index, program, gen):
    k8s.delete_pod(f"{job}-worker-{index}", "ml")
    k8s_jobs.pytorchjob_pod(k8s, job, "worker", index, "ml", program, 2, 2, name=f"{job}-worker-{index}-r{gen}",
                            extra_env={"POD_GEN": str(gen)})


def test_pytorchjob_attach_all_ranks_and_pod_replacement(k8s, tmp_path, port_block):
    program = k8s_jobs.pytorchjob(k8s, "x", "ml", workers=2, ranks_per_pod=2)
    ws = tmp_path / "ws"
    ws.mkdir()
    base = port_block(6)
    cli.wait_for(lambda: all(k8s_jobs.rank_markers(p) == 2 for p in k8s.pods.values()),
                 60, "every pod's two rank markers")  # read from the pods' /tmp, never the ports
    listing = cli.run("ls", "pytorchjob/x", "-n", "ml", "--kubeconfig", str(k8s.kubeconfig_path), "--json", env=ENV)
    assert listing.returncode == 0, listing.stderr
    shown = json.loads(listing.stdout)
    assert [(t["name"], t["node_index"]) for t in shown["targets"]] == [("x-master-0", 0), ("x-worker-0", 1),
                                                                         ("x-worker-1", 2)]
    assert [(r["rank"], r["node"], r["remote_port"]) for r in shown["ranks"]] == [
        (0, "x-master-0", 5678), (1, "x-master-0", 5679), (2, "x-worker-0", 5678), (3, "x-worker-0", 5679),
        (4, "x-worker-1", 5678), (5, "x-worker-1", 5679)]
    assert k8s.stats.portforward == {}  # listing forwards nothing
    bg = attach(k8s, ws, tmp_path, "pytorchjob/x", "-n", "ml", "--local-base-port", str(base))
    try:
        cli.wait_ready(ws, 90, bg=bg)
        ports = cli.launch_ports(ws / ".vscode" / "launch.json")
        assert ports == {r: base + r for r in range(6)}
        for rank, port in sorted(ports.items()):
            assert debug_round("127.0.0.1", port, str(program), ranks.BREAK_LINE, "rank") == str(rank)
        assert k8s.stats.portforward == {"x-master-0": 2, "x-worker-0": 2, "x-worker-1": 2}

        # idle: worker-1 is recreated under a new name for the same replica index
        replace_worker(k8s, "x", 1, program, gen=2)
        cli.wait_for(lambda: pod_of(ws, 4) == "x-worker-1-r2", 60, "rank 4 to move to the new pod")
        cli.wait_ready(ws, 60, ranks="4,5", bg=bg)
        value = debug_round("127.0.0.1", ports[4], str(program), ranks.BREAK_LINE, "os.environ.get('POD_GEN')")
        assert value == "'2'"

        # attached: a debugger stopped at a breakpoint on worker-0 when its pod is replaced
        client = DapClient("127.0.0.1", ports[2], timeout=30)
        client.attach({str(program): [ranks.BREAK_LINE]})
        client.wait_stopped(30)
        replace_worker(k8s, "x", 0, program, gen=3)
        assert_session_ends(client)  # the old pod is gone: the session ends, no hang
        client.close()
        cli.wait_for(lambda: pod_of(ws, 2) == "x-worker-0-r3", 60, "rank 2 to move to the new pod")
        cli.wait_ready(ws, 60, ranks="2,3", bg=bg)
        value = debug_round("127.0.0.1", ports[2], str(program), ranks.BREAK_LINE, "os.environ.get('POD_GEN')")
        assert value == "'3'"
        assert cli.launch_ports(ws / ".vscode" / "launch.json") == ports  # same local ports throughout
    finally:
        code = bg.stop()
    assert code == 130, bg.output()[-2000:]
    assert k8s.token not in bg.output()
    assert k8s.stats.violations == []


def test_websocket_cut_mid_transfer_no_corruption_and_recovery(k8s, tmp_path, port_block):
    k8s_jobs.echo_pod(k8s, "echo-0", "ml")
    ws = tmp_path / "ws"
    ws.mkdir()
    base = port_block(1)
    bg = attach(k8s, ws, tmp_path, "echo-0", "-n", "ml", "--ranks-per-pod", "1", "--base-port", "7000",
                "--local-base-port", str(base), "--no-launch-json")
    try:
        cli.wait_ready(ws, 60, bg=bg)
        payload = os.urandom(32 * 1024 * 1024)
        sock = socket.create_connection(("127.0.0.1", base), timeout=30)
        errors = []

        def send():
            try:
                for i in range(0, len(payload), 65536):
                    sock.sendall(payload[i:i + 65536])
            except OSError as exc:
                errors.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        got = bytearray()
        cut = False
        try:
            while True:
                chunk = sock.recv(262144)
                if not chunk:
                    break
                got += chunk
                if not cut and len(got) > 2 * 1024 * 1024:
                    cut = k8s.kill_streams() > 0
        except OSError:
            pass
        sock.close()
        sender.join(30)
        assert cut and 2 * 1024 * 1024 < len(got) < len(payload)
        assert bytes(got) == payload[:len(got)]  # a prefix: nothing lost in the middle, nothing garbled
        # the forward recovers: the next connection on the same local port is a fresh stream
        with socket.create_connection(("127.0.0.1", base), timeout=30) as again:
            blob = os.urandom(4 * 1024 * 1024)
            threading.Thread(target=again.sendall, args=(blob,), daemon=True).start()
            echoed = bytearray()
            while len(echoed) < len(blob):
                chunk = again.recv(262144)
                assert chunk
                echoed += chunk
            assert bytes(echoed) == blob
    finally:
        assert bg.stop() == 130, bg.output()[-2000:]


HELLO = b"Content-Length: 2\r\n\r\n{}"


def test_auth_failures_exit_codes_and_states(k8s, tmp_path, port_block):
    k8s_jobs.echo_pod(k8s, "echo-0", "ml")
    bad = k8s.kubeconfig(tmp_path / "kc-bad", token="stale-oauth-token")
    res = cli.run("attach", "echo-0", "-n", "ml", "--kubeconfig", str(bad), "--workspace", str(tmp_path), env=ENV)
    assert res.returncode == 5, res.stderr
    assert "401" in res.stderr and "expired" in res.stderr and "oc login" in res.stderr
    assert "stale-oauth-token" not in res.stderr + res.stdout
    assert not (tmp_path / ".vscode").exists()  # nothing half-written

    k8s.deny("list", "pods")
    res = cli.run("ls", "echo-0", "-n", "ml", "--kubeconfig", str(k8s.kubeconfig_path), env=ENV)
    assert res.returncode == 5 and "cannot list" in res.stderr, res.stderr
    k8s.denied.clear()

    # forbidden port-forward while attached: the rank fails with the RBAC verb named
    ws = tmp_path / "ws"
    ws.mkdir()
    base = port_block(2)
    bg = attach(k8s, ws, tmp_path, "echo-0", "-n", "ml", "--ranks-per-pod", "2", "--base-port", "7000",
                "--local-base-port", str(base), "--no-launch-json")
    try:
        cli.wait_ready(ws, 60, ranks="0", bg=bg)
        k8s.deny("create", "pods/portforward")
        with socket.create_connection(("127.0.0.1", base), timeout=10) as c:
            c.sendall(HELLO)  # a debugger's first request: only then is the upstream tried
            row = cli.wait_for(lambda: next((r for r in cli.session(ws)["ranks"]
                                             if r["rank"] == 0 and r["state"] == "failed"), None), 30,
                               "rank 0 to fail")
        assert "pods/portforward" in row["reason"]
        k8s.denied.clear()
        k8s.token = "rotated"  # the session's token expires
        with socket.create_connection(("127.0.0.1", base + 1), timeout=10) as c:
            c.sendall(HELLO)
            row = cli.wait_for(lambda: next((r for r in cli.session(ws)["ranks"]
                                             if r["rank"] == 1 and r["state"] == "failed"), None), 30,
                               "rank 1 to fail")
        assert "expired" in row["reason"]
        state_text = (ws / ".dbgfwd" / "session.json").read_text()
        assert "test-token" not in state_text and "rotated" not in state_text
    finally:
        bg.stop()


def test_stacks_of_every_rank_in_every_pod_through_exec(k8s, tmp_path):
    """`dbgfwd stacks pytorchjob/x`: one exec per pod signals its ranks and reads their dumps back."""
    program = k8s_jobs.pytorchjob(k8s, "x", "ml", workers=1, ranks_per_pod=2)
    cli.wait_for(lambda: all(k8s_jobs.rank_markers(p) == 2 for p in k8s.pods.values()),
                 60, "every pod's two rank markers")
    res = cli.run("stacks", "pytorchjob/x", "-n", "ml", "--kubeconfig", str(k8s.kubeconfig_path), "--json",
                  env=ENV)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [(r["rank"], r["target"]) for r in out["ranks"]] == [(0, "x-master-0"), (1, "x-master-0"),
                                                                 (2, "x-worker-0"), (3, "x-worker-0")]
    for r in out["ranks"]:
        assert r["error"] is None, r
        (main,) = [t for t in r["threads"] if t["main"]]
        assert (main["frames"][0]["file"], main["frames"][0]["function"]) == (str(program), "<module>")
    assert k8s.stats.portforward == {}  # stacks come through exec; nothing is forwarded


def _pod_processes(pod, text: str) -> int:
    """How many Python processes running a script named `text` are in the pod (its network namespace)."""
    want = os.readlink(f"/proc/{pod.runtime.proc.pid}/ns/net") if pod.runtime.proc else None
    count = 0
    for name in os.listdir("/proc"):
        try:
            argv = open(f"/proc/{name}/cmdline", "rb").read().split(b"\0") if name.isdigit() else []
            if argv and argv[0].endswith(b"python") and text.encode() in argv[-2] and \
                    os.readlink(f"/proc/{name}/ns/net") == want:
                count += 1
        except OSError:
            continue
    return count


def test_inject_into_pods_whose_ranks_run_without_dbgfwd(k8s, tmp_path, port_block):
    """A PyTorchJob whose pods run plain `python -S prog.py` ranks (no dbgfwd-rank, and an interpreter that cannot
    import debugpy): attach --inject sends dbgfwd's rank part and debugpy through pod exec, injects every rank,
    and the forwards reach them."""
    program = ranks.write_program(k8s_jobs.app_dir(k8s), name="plain_prog.py")
    for rtype, index in (("master", 0), ("worker", 0)):
        k8s_jobs.pytorchjob_pod(k8s, "p", rtype, index, "ml", program, 2, 1, rank_launcher=False, python_flags="-S")
    for pod in k8s.pods.values():
        cli.wait_for(lambda: _pod_processes(pod, "plain_prog.py") == 2, 60, f"two ranks in {pod.name}")
    ws = tmp_path / "ws"
    ws.mkdir()
    base = port_block(4)
    bg = attach(k8s, ws, tmp_path, "pytorchjob/p", "-n", "ml", "--inject", "--match", "plain_prog",
                "--local-base-port", str(base))
    try:
        cli.wait_ready(ws, 120, bg=bg)
        ports = cli.launch_ports(ws / ".vscode" / "launch.json")
        assert ports == {r: base + r for r in range(4)}, bg.output()
        report = json.loads((ws / ".dbgfwd" / "inject.json").read_text())
        assert sorted((r["rank"], r["target"], r["state"]) for t in report for r in t["ranks"]) == [
            (0, "p-master-0", "injected"), (1, "p-master-0", "injected"), (2, "p-worker-0", "injected"),
            (3, "p-worker-0", "injected")], report
        assert all(r["applied"][0].endswith("(brought by dbgfwd)") for t in report for r in t["ranks"])
        for rank, port in sorted(ports.items()):
            assert debug_round("127.0.0.1", port, str(program), ranks.BREAK_LINE, "rank") == str(rank)
        assert k8s.stats.exec["p-master-0"] >= 2  # staging + scan, then injection (and the probes)
    finally:
        assert bg.stop() == 130, bg.output()[-3000:]


def test_job_session_announces_every_rank_and_again_those_of_a_replaced_pod(k8s, tmp_path, port_block):
    """The "dbgfwd: job" session through pod port-forwards, with a client behaving like VS Code's Python
    extension: a child session per rank; when worker-0 is replaced by a new pod, ranks 2 and 3 (and only they)
    are announced again and their new processes stop at the breakpoint."""
    from tests.support.dap import ExtensionJobSession

    program = k8s_jobs.pytorchjob(k8s, "j", "ml", workers=1, ranks_per_pod=2)
    ws = tmp_path / "ws"
    ws.mkdir()
    base = port_block(5)
    bg = attach(k8s, ws, tmp_path, "pytorchjob/j", "-n", "ml", "--local-base-port", str(base + 1))
    editor, children = None, {}
    try:
        cli.wait_ready(ws, 90, bg=bg)
        editor = ExtensionJobSession(cli.session(ws)["job_port"])
        for _ in range(4):
            body = editor.next_attach()
            children[body["subProcessId"]] = editor.child(body, {str(program): [ranks.BREAK_LINE]})
        for rank, child in sorted(children.items()):
            thread_id = child.wait_stopped(60)["body"]["threadId"]
            assert child.evaluate("rank", child.top_frame(thread_id)["id"]) == str(rank)
            child.request("setBreakpoints", {"source": {"path": str(program)}, "breakpoints": []})
            child.continue_(thread_id)

        replace_worker(k8s, "j", 0, program, gen=2)
        again = {}
        for _ in range(2):
            body = editor.next_attach(90)
            again[body["subProcessId"]] = editor.child(body, {str(program): [ranks.BREAK_LINE]})
        assert sorted(again) == [2, 3]
        for rank, child in sorted(again.items()):
            children.pop(rank).close()
            children[rank] = child
            thread_id = child.wait_stopped(60)["body"]["threadId"]
            assert child.evaluate("(rank, os.environ['POD_GEN'])", child.top_frame(thread_id)["id"]) == \
                repr((rank, "2"))
        editor.sync()
        announced = [b["subProcessId"] for b in editor.announced]  # in the order the ranks became ready
        assert sorted(announced[:4]) == [0, 1, 2, 3] and sorted(announced[4:]) == [2, 3], announced
    finally:
        for child in children.values():
            child.close()
        if editor is not None:
            editor.close()
        assert bg.stop() == 130, bg.output()[-3000:]
