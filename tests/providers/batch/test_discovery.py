"""Discovery against moto (EC2/ECS) and the strict fake Batch API."""

import pytest

from dbgfwd.errors import AuthError, ExitCode, NotFoundError, UpstreamError, UsageError
from dbgfwd.providers.base import ProviderConfig
from dbgfwd.providers.batch import BatchProvider


def provider(*targets, rpn=None, **options):
    return BatchProvider(ProviderConfig(targets=targets, options=options, ranks_per_node=rpn))


def test_mnp_job_nodes_are_targets_with_awsvpc_routes(world):
    nodes = [world.instance() for _ in range(3)]
    job = world.mnp_job([(ci, f"10.0.1.{10 + i}") for i, (_, ci) in enumerate(nodes)], pending=1)
    found = provider(job, rpn=2).discover()
    assert [t.key for t in found.targets] == [f"{job}#{i}" for i in range(4)]
    assert [t.running for t in found.targets] == [True, True, True, False]
    assert found.targets[3].status == "STARTING"
    assert [t.rank_base for t in found.targets] == [0, 2, 4, 6]
    for i, t in enumerate(found.targets[:3]):
        assert t.handle.ssm_target == nodes[i][0]  # the EC2 instance moto registered
        assert t.handle.host == f"10.0.1.{10 + i}"
        assert t.detail["document"] == "AWS-StartPortForwardingSessionToRemoteHost"
    assert job in found.where


def test_array_job_keeps_active_children_and_drops_finished(world):
    inst, ci = world.instance()
    job = world.array_job([("RUNNING", ci), ("RUNNABLE", None), ("SUCCEEDED", None)])
    targets = provider(job).discover().targets
    assert [(t.key, t.running, t.status) for t in targets] == [(f"{job}:0", True, "RUNNING"),
                                                               (f"{job}:1", False, "RUNNABLE")]
    assert targets[0].handle.ssm_target == inst and targets[0].handle.host is None
    assert targets[0].detail["document"] == "AWS-StartPortForwardingSession"


def test_queue_and_name_pattern(world):
    _, ci = world.instance()
    a = world.single_job(ci, name="train-a")
    world.single_job(ci, name="eval-b")
    targets = provider(queue="gpu-queue", job_name="train-*").discover().targets
    assert [t.key for t in targets] == [a]
    with pytest.raises(NotFoundError, match="no active jobs named 'nothing-\\*'"):
        provider(queue="gpu-queue", job_name="nothing-*").discover()


def test_unknown_job_is_one_line_not_found(world):
    missing = "00000000-1111-2222-3333-444444444444"
    with pytest.raises(NotFoundError) as err:
        provider(missing).discover()
    assert missing in err.value.message and "region us-east-1" in err.value.message
    assert err.value.code == ExitCode.NOT_FOUND and err.value.hint


def test_finished_job_says_so(world):
    job = world.single_job(None, status="FAILED")
    with pytest.raises(NotFoundError, match="is FAILED"):
        provider(job).discover()


def test_bad_spec_and_option_combination():
    with pytest.raises(UsageError, match="not an AWS Batch job id"):
        provider("worker-1", region="us-east-1").discover()
    with pytest.raises(UsageError, match="--job-name needs --queue"):
        provider(job_name="x")


def test_claims_job_ids_and_options():
    assert BatchProvider.claims(ProviderConfig(targets=("3f2a1b4c-1111-2222-3333-444455556666:3",)))
    assert BatchProvider.claims(ProviderConfig(options={"queue": "q"}))
    assert not BatchProvider.claims(ProviderConfig(targets=("node1",)))


def test_ecs_exec_route_and_agent_not_running(world, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", world.fake.url)  # moto has no runtimeId/managedAgents
    job = world.single_job(None, ip="10.0.2.5", exec_=True)
    target = world.exec_task(job)
    t = provider(job).discover().targets[0]
    assert t.handle.ssm_target == target and t.handle.host is None and t.handle.kind == "ecs-exec"
    job2 = world.single_job(None, exec_=True)
    world.exec_task(job2, agent_status="PENDING")
    t2 = provider(job2).discover().targets[0]
    with pytest.raises(UpstreamError, match="ECS Exec agent is not running"):
        provider(job2).open_stream(t2, 5678, 5)


def test_eks_job_points_at_kubernetes(world):
    job = world.single_job(None, status="RUNNING")
    world.fake.jobs[job]["eksAttempts"] = [{"podName": "train-abc", "podNamespace": "ml"}]
    world.fake.jobs[job]["eksProperties"] = {"podProperties": {}}
    with pytest.raises(UsageError, match="runs on Amazon EKS \\(pod ml/train-abc\\)"):
        provider(job).discover()


def test_no_credentials(world, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(AuthError, match="no AWS credentials") as err:
        provider("00000000-1111-2222-3333-444444444444").discover()
    assert "aws sso login" in err.value.hint or "aws configure" in err.value.hint


def test_access_denied_and_not_connected_name_the_fix(world):
    _, ci = world.instance(connected=False)
    job = world.single_job(ci)
    p = provider(job)
    t = p.discover().targets[0]
    with pytest.raises(UpstreamError, match="not connected to Session Manager") as err:
        p.open_stream(t, 5678, 5)
    assert err.value.retryable and "amazon-ssm-agent" in err.value.hint
    world.fake.connected.add(t.handle.ssm_target)
    world.fake.deny.add("StartSession")
    with pytest.raises(UpstreamError, match="AccessDenied: not allowed to call ssm:StartSession") as err:
        p.open_stream(t, 5678, 5)
    assert not err.value.retryable and err.value.code == ExitCode.AUTH


def test_expired_sso_translates():
    import botocore.exceptions as be

    from dbgfwd.providers.batch.aws import AwsContext, translate
    err = translate(be.SSOTokenLoadError(error_msg="expired"), AwsContext("dev", "eu-west-1"), "batch:DescribeJobs")
    assert isinstance(err, AuthError) and "SSO session has expired" in err.message
    assert err.hint == "run `aws sso login --profile dev`"
