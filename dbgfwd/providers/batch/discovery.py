"""AWS Batch jobs -> dbgfwd Targets, each with the SSM route that reaches it.

A spec is a job id (`<uuid>`), an array child (`<uuid>:<n>`), an MNP node (`<uuid>#<n>`), or
`--queue Q [--job-name PATTERN]`. Parents expand to their children: every node of a multi-node
parallel job (node index -> rank base) and every child of an array job. Jobs not RUNNING yet are
targets with running=False; finished ones are left out.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from dbgfwd.errors import NotFoundError, UsageError
from dbgfwd.providers.base import Discovery, Target
from dbgfwd.providers.batch.aws import Clients, call

JOB_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?:[:#]\d+)?$")
ACTIVE = ("RUNNING", "STARTING", "RUNNABLE", "PENDING", "SUBMITTED")
TERMINAL = ("SUCCEEDED", "FAILED")


def looks_like_job_id(text: str) -> bool:
    return bool(JOB_ID_RE.match(text))


@dataclass(frozen=True)
class Route:
    """How SSM reaches one running job (the Target handle). `problem` set: it cannot, and why."""

    job_id: str
    ssm_target: str = ""
    host: str | None = None  # remote host for AWS-StartPortForwardingSessionToRemoteHost (awsvpc)
    kind: str = ""  # "ecs-exec", "ec2-host", "ec2-awsvpc"
    problem: str = ""
    hint: str = ""
    retryable: bool = True

    @property
    def document(self) -> str:
        return "AWS-StartPortForwardingSessionToRemoteHost" if self.host else "AWS-StartPortForwardingSession"


def check_specs(specs: tuple[str, ...], queue: str | None) -> None:
    """The job ids are checked before anything else (region, credentials): a typo is the user's to fix."""
    for spec in specs:
        if not looks_like_job_id(spec):
            raise UsageError(f"{spec!r} is not an AWS Batch job id",
                             hint="give <job uuid>, <uuid>:<index> (array child), <uuid>#<node> (MNP node), "
                                  "or --queue QUEUE")
    if not specs and not queue:
        raise UsageError("no AWS Batch job given", hint="pass a job id, or --queue QUEUE [--job-name PATTERN]")


class BatchDiscovery:
    def __init__(self, clients: Clients, specs: tuple[str, ...], queue: str | None, name_pattern: str | None,
                 ranks_per_node: int | None, kubernetes_available: bool):
        check_specs(specs, queue)
        self.clients, self.specs, self.queue, self.pattern = clients, specs, queue, name_pattern
        self.rpn = ranks_per_node
        self.kubernetes_available = kubernetes_available
        self._routes: dict[tuple[str, str], Route] = {}
        self._instances: dict[str, str] = {}

    @property
    def where(self) -> str:
        what = f"queue {self.queue}" if self.queue else f"job {', '.join(self.specs)}"
        return f"AWS Batch {what} ({self.clients.ctx.describe()})"

    # ---- API helpers ----
    def _describe(self, ids: list[str]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        batch = self.clients("batch")
        for i in range(0, len(ids), 100):
            resp = call(self.clients.ctx, "batch:DescribeJobs", batch.describe_jobs, jobs=ids[i:i + 100])
            out.update({j["jobId"]: j for j in resp.get("jobs", [])})
        return out

    def _list(self, **kwargs) -> list[dict]:
        batch = self.clients("batch")
        out: list[dict] = []
        for status in ACTIVE:
            token = None
            while True:
                args = dict(kwargs, jobStatus=status, **({"nextToken": token} if token else {}))
                resp = call(self.clients.ctx, "batch:ListJobs", batch.list_jobs, **args)
                out += resp.get("jobSummaryList", [])
                token = resp.get("nextToken")
                if not token:
                    break
        return out

    # ---- discovery ----
    def discover(self) -> Discovery:
        roots: list[str] = list(self.specs)
        if self.queue:
            for summary in self._list(jobQueue=self.queue):
                if self.pattern is None or fnmatch.fnmatchcase(summary.get("jobName", ""), self.pattern):
                    roots.append(summary["jobId"])
            if not roots:
                pattern = f" named {self.pattern!r}" if self.pattern else ""
                raise NotFoundError(f"no active jobs{pattern} in {self.where}",
                                    hint="check the queue name and --job-name pattern (shell-style, e.g. 'train-*')")
        details = self._describe(sorted(set(roots)))
        targets: list[Target] = []
        for job_id in dict.fromkeys(roots):
            job = details.get(job_id)
            if job is None:
                raise NotFoundError(f"AWS Batch job {job_id} not found ({self.clients.ctx.describe()})",
                                    hint="check the job id and --region/--profile (jobs are listed for 7 days "
                                         "after they finish)")
            found = self._expand(job)
            if not found and not self.queue:
                raise NotFoundError(f"AWS Batch job {job_id} is {job.get('status', '?')}: no nodes to attach to",
                                    hint="start the job again; dbgfwd attaches to RUNNING jobs")
            targets += found
        return Discovery(tuple(sorted(targets, key=lambda t: (t.node_index, t.key))), self.where)

    def _expand(self, job: dict) -> list[Target]:
        if job.get("eksProperties") or job.get("eksAttempts"):
            self._eks(job)
        job_id = job["jobId"]
        if job.get("nodeProperties") and not job.get("nodeDetails"):
            return self._children(job, self._list(multiNodeJobId=job_id))
        array = job.get("arrayProperties") or {}
        if "size" in array and "index" not in array:
            return self._children(job, self._list(arrayJobId=job_id))
        if job.get("status") in TERMINAL:
            return []
        return [self._target(job)]

    def _children(self, parent: dict, summaries: list[dict]) -> list[Target]:
        if parent.get("status") in TERMINAL:
            return []
        ids = sorted({s["jobId"] for s in summaries})
        if not ids:  # nodes/children are created when the parent starts: show the parent as waiting
            return [Target(key=parent["jobId"], name=parent.get("jobName", parent["jobId"]), running=False,
                           status=parent.get("status", "?"), detail={"job": parent["jobId"]})]
        details = self._describe(ids)
        return [self._target(details[i]) for i in ids if i in details and details[i].get("status") not in TERMINAL]

    def _eks(self, job: dict) -> None:
        attempts = job.get("eksAttempts") or []
        pod = attempts[-1].get("podName") if attempts else None
        ns = attempts[-1].get("podNamespace") if attempts else None
        where = f" (pod {ns}/{pod})" if pod else ""
        if self.kubernetes_available:
            raise UsageError(f"AWS Batch job {job['jobId']} runs on Amazon EKS{where}",
                             hint=f"attach through Kubernetes: dbgfwd attach --provider kubernetes"
                                  f"{' -n ' + ns if ns else ''} {pod or '<pod>'}")
        raise UsageError(f"AWS Batch job {job['jobId']} runs on Amazon EKS{where}, which this dbgfwd cannot "
                         "reach through SSM", hint="use a dbgfwd with the kubernetes provider, or kubectl port-forward")

    def _target(self, job: dict) -> Target:
        job_id = job["jobId"]
        node = (job.get("nodeDetails") or {}).get("nodeIndex")
        index = (job.get("arrayProperties") or {}).get("index")
        node_index = node if node is not None else (index if index is not None else 0)
        name = job.get("jobName", job_id)
        if node is not None:
            name = f"{name}#{node}"
        elif index is not None:
            name = f"{name}:{index}"
        status = job.get("status", "?")
        detail = {"job": job_id}
        route = None
        if status == "RUNNING":
            route = self._route(job)
            if route.problem:
                detail["problem"] = route.problem
            else:
                detail.update({"ssm-target": route.ssm_target, "document": route.document, "path": route.kind})
                if route.host:  # the instance's agent dials the node's IP, not its loopback
                    detail["host"] = route.host
                    detail["note"] = (f"ranks must listen on {route.host} (dbgfwd-rank --host {route.host}), "
                                      "or submit with enableExecuteCommand to keep them on 127.0.0.1")
        return Target(key=job_id, name=name, node_index=node_index,
                      rank_base=node_index * self.rpn if self.rpn else None, running=status == "RUNNING",
                      status=status, detail=detail, handle=route)

    # ---- job -> SSM route ----
    def _route(self, job: dict) -> Route:
        container = job.get("container") or {}
        job_id = job["jobId"]
        task_arn = container.get("taskArn") or ""
        cached = self._routes.get((job_id, task_arn))
        if cached is not None and not cached.problem:
            return cached
        route = self._resolve(job_id, container, task_arn)
        self._routes[(job_id, task_arn)] = route
        return route

    def _resolve(self, job_id: str, container: dict, task_arn: str) -> Route:
        ci_arn = container.get("containerInstanceArn") or ""
        nics = container.get("networkInterfaces") or []
        ip = nics[0].get("privateIpv4Address") if nics else None
        if container.get("enableExecuteCommand") and task_arn:
            return self._ecs_exec(job_id, task_arn, ci_arn)
        if ci_arn:
            cluster = _arn_path(ci_arn)[0]
            instance = self._instances.get(ci_arn)
            if instance is None:
                ecs = self.clients("ecs")
                resp = call(self.clients.ctx, "ecs:DescribeContainerInstances", ecs.describe_container_instances,
                            ci_arn, cluster=cluster, containerInstances=[ci_arn])
                found = resp.get("containerInstances") or []
                if not found or not found[0].get("ec2InstanceId"):
                    return Route(job_id, problem=f"container instance {ci_arn} of job {job_id} not found in ECS")
                instance = self._instances[ci_arn] = found[0]["ec2InstanceId"]
            if ip:
                return Route(job_id, instance, host=ip, kind="ec2-awsvpc")
            return Route(job_id, instance, kind="ec2-host")
        return Route(job_id, problem=f"job {job_id} runs on Fargate without ECS Exec, which SSM cannot reach",
                     hint="submit it with enableExecuteCommand=true", retryable=False)

    def _ecs_exec(self, job_id: str, task_arn: str, ci_arn: str) -> Route:
        parts = _arn_path(task_arn)
        cluster = parts[0] if len(parts) == 2 else (_arn_path(ci_arn)[0] if ci_arn else "default")
        task_id = parts[-1]
        ecs = self.clients("ecs")
        resp = call(self.clients.ctx, "ecs:DescribeTasks", ecs.describe_tasks, task_arn, cluster=cluster,
                    tasks=[task_arn])
        tasks = resp.get("tasks") or []
        if not tasks:
            return Route(job_id, problem=f"ECS task {task_id} of job {job_id} not found in cluster {cluster}")
        for c in tasks[0].get("containers", []):
            if not c.get("runtimeId"):
                continue
            agents = {a.get("name"): a.get("lastStatus") for a in c.get("managedAgents", [])}
            state = agents.get("ExecuteCommandAgent")
            if state != "RUNNING":
                return Route(job_id, problem=f"the ECS Exec agent is not running in task {task_id} "
                                             f"(ExecuteCommandAgent {state or 'absent'})",
                             hint="give the job's task role ssmmessages:* permissions; the agent starts with the task")
            return Route(job_id, f"ecs:{cluster}_{task_id}_{c['runtimeId']}", kind="ecs-exec")
        return Route(job_id, problem=f"ECS task {task_id} of job {job_id} has no running container yet")


def _arn_path(arn: str) -> list[str]:
    """'arn:aws:ecs:r:a:task/cluster/id' -> ['cluster', 'id']."""
    return arn.split(":", 5)[-1].split("/")[1:]
