"""End to end: `dbgfwd attach --provider batch MNP_JOB` as a subprocess, 3 nodes x 2 real debugpy
ranks reached through the native SSM client and the test agent, a DAP client on all 6 ports."""

import pytest

from tests.support import cli
from tests.support.dap import debug_round
from tests.support.net import free_base_on
from tests.support.ranks import BREAK_LINE, start_rank, wait_for_markers, write_program

NODE_IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]  # each node's "private IP" (all loopback)


def free_base_port() -> int:
    """A base port whose two ports are free on every node address."""
    return free_base_on(NODE_IPS, 2)


@pytest.mark.timeout(240)
def test_attach_mnp_job_and_hit_breakpoints_on_every_rank(world, tmp_path):
    nodes = [world.instance() for _ in NODE_IPS]
    job = world.mnp_job([(ci, ip) for (_, ci), ip in zip(nodes, NODE_IPS)])
    base = free_base_port()
    program = write_program(tmp_path)
    ranks = []
    try:
        for n, ip in enumerate(NODE_IPS):
            run_dir = tmp_path / f"node{n}" / "run"
            for lr in range(2):
                ranks.append(start_rank(program, n * 2 + lr, lr, run_dir, base_port=base, world_size=6,
                                        extra_args=["--host", ip]))
            wait_for_markers(run_dir, {n * 2, n * 2 + 1}, procs=ranks)
        # -vv: botocore logs response bodies at debug; tokens must still never show
        bg = cli.Background("-vv", "attach", "--provider", "batch", job, "--ranks-per-node", "2", "--base-port", str(base),
                            "--workspace", str(tmp_path), log=tmp_path / "attach.log", env=world.env())
        try:
            cli.wait_ready(tmp_path, timeout=60, bg=bg)
            ports = cli.launch_ports(tmp_path / ".vscode" / "launch.json")
            assert sorted(ports) == list(range(6)), bg.output()[-2000:]
            for rank, port in sorted(ports.items()):
                assert debug_round("127.0.0.1", port, str(program), BREAK_LINE, "rank") == str(rank)
        finally:
            code = bg.stop()
        out = bg.output()
        assert code == 130, out[-3000:]
    finally:
        for r in ranks:
            r.stop()
    started = world.fake.ops("StartSession")
    assert len(started) == 6  # one SSM session per (node, port)
    assert {(s["Target"], s["Parameters"]["host"][0]) for s in started} == {
        (inst, ip) for (inst, _), ip in zip(nodes, NODE_IPS)}
    assert all(s["DocumentName"] == "AWS-StartPortForwardingSessionToRemoteHost" for s in started)
    terminated = {b["SessionId"] for b in world.fake.ops("TerminateSession")}
    assert terminated == set(world.fake.sessions)  # every session ended on exit
    assert world.agent.violations == []
    for sess in world.agent.sessions.values():  # tokens and stream URLs never reach the output
        assert sess.tokens_used and all(tok not in out for tok in sess.tokens_used)
    assert "Response body" in out  # the SDK's debug logging really was on
    assert "cell-number" not in out and "AAEAAQ" not in out  # StreamUrl query strings


def _one_rank_session(world, tmp_path, job, base, program, run_dir, extra_env=None):
    """attach to a single-node job; returns the Background attach."""
    env = dict(world.env(), **(extra_env or {}))
    return cli.Background("attach", "--provider", "batch", job, "--ranks-per-node", "1", "--base-port", str(base),
                          "--workspace", str(tmp_path), log=tmp_path / "attach.log", env=env)


def _debug_it(workspace, bg, run_dir, rank, program) -> None:
    """The rank's marker is there, attach says ready, and a whole debugger session goes through."""
    wait_for_markers(run_dir, {0}, procs=[rank])
    cli.wait_ready(workspace, timeout=90, bg=bg)
    port = cli.launch_ports(workspace / ".vscode" / "launch.json")[0]
    assert debug_round("127.0.0.1", port, str(program), BREAK_LINE, "rank") == "0"


def _one_route(world, bg, code: int, ssm_target: str) -> None:
    """attach stopped cleanly, and every SSM session went to `ssm_target` with the plain port document."""
    assert code == 130, bg.output()[-3000:]
    started = world.fake.ops("StartSession")
    assert started and {(s["Target"], s["DocumentName"]) for s in started} == {
        (ssm_target, "AWS-StartPortForwardingSession")}
    assert world.agent.violations == []


@pytest.mark.timeout(180)
def test_a_job_still_runnable_at_attach_is_picked_up_when_it_runs_through_its_instance(world, tmp_path):
    """The EC2-instance route (no awsvpc address: the agent dials the instance's own loopback), and a job
    that is still RUNNABLE when attach starts: its rank is forwarded once Batch says it runs."""
    inst, ci = world.instance(localhost="127.0.0.5")
    job = world.single_job(None, status="RUNNABLE")
    base = free_base_port()
    program = write_program(tmp_path)
    run_dir = tmp_path / "node0" / "run"
    rank = None
    bg = _one_rank_session(world, tmp_path, job, base, program, run_dir)
    try:
        cli.wait_for(lambda: (tmp_path / ".dbgfwd" / "session.json").exists(), what="session", timeout=60)
        cli.wait_for(lambda: cli.session(tmp_path)["ranks"][0]["target_status"] == "RUNNABLE",
                     what="the job seen RUNNABLE", timeout=60)
        assert world.fake.ops("StartSession") == []  # nothing to reach yet
        # Batch places it on the instance and starts it; its rank listens on the instance's loopback
        running = world.fake.jobs[job]
        running.update(status="RUNNING", startedAt=running["createdAt"] + 1000,
                       container=world._container(ci, None))
        rank = start_rank(program, 0, 0, run_dir, base_port=base, extra_args=["--host", "127.0.0.5"])
        _debug_it(tmp_path, bg, run_dir, rank, program)
    finally:
        code = bg.stop()
        if rank:
            rank.stop()
    _one_route(world, bg, code, inst)


@pytest.mark.timeout(180)
def test_an_ecs_exec_job_carries_a_debugger_session(world, tmp_path):
    """The ECS Exec route: the SSM target is the task's container (ecs:CLUSTER_TASK_RUNTIME), found with ECS
    DescribeTasks; the debugger's whole session goes through it."""
    job = world.single_job(None, ip="10.0.2.5", exec_=True)
    target = world.exec_task(job)
    world.agent.localhost_of[target] = "127.0.0.6"  # the container's own loopback
    base = free_base_port()
    program = write_program(tmp_path)
    run_dir = tmp_path / "task" / "run"
    rank = start_rank(program, 0, 0, run_dir, base_port=base, extra_args=["--host", "127.0.0.6"])
    bg = _one_rank_session(world, tmp_path, job, base, program, run_dir,
                           extra_env={"AWS_ENDPOINT_URL_ECS": world.fake.url})
    try:
        _debug_it(tmp_path, bg, run_dir, rank, program)
    finally:
        code = bg.stop()
        rank.stop()
    _one_route(world, bg, code, target)
