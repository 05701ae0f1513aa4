"""A loopback AWS for the Batch provider: moto (EC2 + ECS container instances), the strict fake
(Batch jobs, SSM sessions, ECS DescribeTasks) and the test SSM agent, wired by endpoint env vars.

botocore reads AWS_ENDPOINT_URL_<SERVICE> natively, so dbgfwd needs no test-only switch.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import ExitStack, contextmanager

from tests.support.aws_fake import FakeAws
from tests.support.ssm_agent import TestSsmAgent

REGION = "us-east-1"
ACCOUNT = "123456789012"
QUEUE_ARN = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/gpu-queue"
CLUSTER = "AWSBatch-gpu-ce-4c3b1f2e-0d8a-3a51-9d5c-6f0f0d2b5e1a"


_IMAGES: dict[str, str] = {}


@contextmanager
def moto_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


class BatchWorld:
    def __init__(self, moto_url: str | None = None, **agent_knobs):
        """`moto_url`: share one moto server (it takes seconds to start); else start our own."""
        self.agent_knobs = agent_knobs
        self.moto_url = moto_url
        self._stack = ExitStack()

    def __enter__(self) -> "BatchWorld":
        import boto3

        if self.moto_url is None:
            self.moto_url = self._stack.enter_context(moto_server())
        self.agent = self._stack.enter_context(TestSsmAgent(**self.agent_knobs))
        self.fake = self._stack.enter_context(FakeAws(self.agent, REGION))
        kw = dict(region_name=REGION, endpoint_url=self.moto_url, aws_access_key_id="testing",
                  aws_secret_access_key="testing")
        self.ec2 = boto3.client("ec2", **kw)
        self.ecs = boto3.client("ecs", **kw)
        self.ecs.create_cluster(clusterName=CLUSTER)
        if self.moto_url not in _IMAGES:  # listing moto's AMIs is slow: once per server
            _IMAGES[self.moto_url] = self.ec2.describe_images()["Images"][0]["ImageId"]
        self._image = _IMAGES[self.moto_url]
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def env(self) -> dict[str, str]:
        """Environment for boto3 (in-process via monkeypatch, or a dbgfwd subprocess)."""
        return {"AWS_ACCESS_KEY_ID": "AKIATESTTESTTESTTEST", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
                "AWS_CONFIG_FILE": "/nonexistent/aws-config", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/creds",
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_ENDPOINT_URL_BATCH": self.fake.url, "AWS_ENDPOINT_URL_SSM": self.fake.url,
                "AWS_ENDPOINT_URL_ECS": self.moto_url, "AWS_ENDPOINT_URL_EC2": self.moto_url}

    # ---- infrastructure ----
    def instance(self, connected: bool = True, localhost: str = "127.0.0.1") -> tuple[str, str]:
        """A real (moto) EC2 instance registered as an ECS container instance. -> (instance id, CI arn)."""
        inst = self.ec2.run_instances(ImageId=self._image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        doc = json.dumps({"instanceId": inst, "region": REGION})
        ci = self.ecs.register_container_instance(cluster=CLUSTER, instanceIdentityDocument=doc)
        if connected:
            self.fake.connected.add(inst)
        self.agent.localhost_of[inst] = localhost
        return inst, ci["containerInstance"]["containerInstanceArn"]

    # ---- jobs ----
    def _job(self, job_id: str, name: str, status: str, **extra) -> dict:
        now = int(time.time() * 1000)
        job = {"jobArn": f"arn:aws:batch:{REGION}:{ACCOUNT}:job/{job_id}", "jobName": name, "jobId": job_id,
               "jobQueue": QUEUE_ARN, "status": status, "attempts": [], "createdAt": now - 60000,
               "dependsOn": [], "jobDefinition": f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/{name}:3",
               "parameters": {}, "tags": {}, "propagateTags": False, "platformCapabilities": ["EC2"]}
        if status in ("RUNNING", "SUCCEEDED", "FAILED"):
            job["startedAt"] = now - 30000
        job.update(extra)
        self.fake.jobs[job_id] = job
        return job

    def _container(self, ci_arn: str | None, ip: str | None, exec_: bool = False) -> dict:
        task_id = uuid.uuid4().hex
        c = {"image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/train:latest", "vcpus": 8, "memory": 30000,
             "command": ["torchrun", "train.py"], "jobRoleArn": f"arn:aws:iam::{ACCOUNT}:role/batch-job",
             "volumes": [], "environment": [], "mountPoints": [], "ulimits": [], "resourceRequirements": [],
             "logStreamName": f"train/default/{task_id}", "secrets": [],
             "taskArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{CLUSTER}/{task_id}", "networkInterfaces": []}
        if ci_arn:
            c["containerInstanceArn"] = ci_arn
            c["instanceType"] = "g5.12xlarge"
        if ip:
            c["networkInterfaces"] = [{"attachmentId": str(uuid.uuid4()), "privateIpv4Address": ip}]
        if exec_:
            c["enableExecuteCommand"] = True
        return c

    def single_job(self, ci_arn: str | None, name: str = "train", status: str = "RUNNING",
                   ip: str | None = None, exec_: bool = False) -> str:
        job_id = str(uuid.uuid4())
        container = self._container(ci_arn, ip, exec_) if status == "RUNNING" else {"image": "train:latest"}
        self._job(job_id, name, status, container=container)
        return job_id

    def mnp_job(self, nodes: list[tuple[str, str]], name: str = "train-mnp", pending: int = 0) -> str:
        """Multi-node parallel job: `nodes` = [(container instance arn, private ip)] RUNNING, then
        `pending` more nodes still STARTING."""
        job_id = str(uuid.uuid4())
        total = len(nodes) + pending
        self._job(job_id, name, "RUNNING", nodeProperties={
            "numNodes": total, "mainNode": 0,
            "nodeRangeProperties": [{"targetNodes": f"0:{total - 1}", "container": {"image": "train:latest"}}]})
        for i, (ci_arn, ip) in enumerate(nodes):
            self._job(f"{job_id}#{i}", name, "RUNNING", container=self._container(ci_arn, ip),
                      nodeDetails={"nodeIndex": i, "isMainNode": i == 0})
        for i in range(len(nodes), total):
            self._job(f"{job_id}#{i}", name, "STARTING", container={"image": "train:latest"},
                      nodeDetails={"nodeIndex": i, "isMainNode": False})
        return job_id

    def array_job(self, children: list[tuple[str, str | None]], name: str = "sweep") -> str:
        """Array job: children [(status, container instance arn or None)]."""
        job_id = str(uuid.uuid4())
        self._job(job_id, name, "RUNNING", arrayProperties={"size": len(children),
                                                              "statusSummary": {"RUNNING": len(children)}})
        for i, (status, ci_arn) in enumerate(children):
            container = self._container(ci_arn, None) if status == "RUNNING" else {"image": "train:latest"}
            self._job(f"{job_id}:{i}", name, status, container=container, arrayProperties={"index": i})
        return job_id

    def exec_task(self, job_id: str, agent_status: str = "RUNNING") -> str:
        """Seed ECS DescribeTasks for an ECS Exec job; returns the SSM target it implies."""
        job = self.fake.jobs[job_id]
        task_arn = job["container"]["taskArn"]
        runtime = f"{uuid.uuid4().hex}-{1234567890}"
        self.fake.tasks[task_arn] = {"taskArn": task_arn, "clusterArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{CLUSTER}",
                                     "lastStatus": "RUNNING", "enableExecuteCommand": True,
                                     "containers": [{"name": "default", "runtimeId": runtime, "lastStatus": "RUNNING",
                                                     "managedAgents": [{"name": "ExecuteCommandAgent",
                                                                        "lastStatus": agent_status}]}]}
        target = f"ecs:{CLUSTER}_{task_arn.rsplit('/', 1)[1]}_{runtime}"
        self.fake.connected.add(target)
        return target


def set_env(monkeypatch, world: BatchWorld) -> None:
    for k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    for k, v in world.env().items():
        monkeypatch.setenv(k, v)
