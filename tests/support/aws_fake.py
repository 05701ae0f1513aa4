"""A strict loopback stand-in for the AWS APIs moto cannot serve for these tests.

- AWS Batch DescribeJobs / ListJobs (rest-json: POST /v1/describejobs, /v1/listjobs): moto's Batch
  never shows RUNNING jobs without docker, so jobs with realistic RUNNING fields are seeded here.
- SSM StartSession / ResumeSession / TerminateSession (json 1.1, X-Amz-Target AmazonSSM.*): moto
  does not implement them; sessions are created in the test SSM agent and the StreamUrl points at it.
- ECS DescribeTasks (json 1.1): moto omits containers[].runtimeId and managedAgents (ECS Exec).

Like the real endpoints it rejects unsigned or malformed requests: the SigV4 signature is checked
(recomputed with botocore's signer from the test credentials), X-Amz-Date must be within 15 minutes
and match the credential scope's date, the content type must be the protocol's, and JSON members must
have the modelled types, ranges and required members. Anything else gets an answer too (500), never
a dropped connection.
"""

from __future__ import annotations

import calendar
import hmac
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.net import ApiHTTPServer

AUTH_RE = re.compile(r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[A-Z0-9]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/"
                     r"(?P<service>[a-z0-9-]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?"
                     r"Signature=(?P<sig>[0-9a-f]{64})$")
TARGET_RE = re.compile(r"^(i-[0-9a-f]{8,17}|mi-[0-9a-f]{17}|ecs:[A-Za-z0-9_-]+_[0-9a-f]{32}_[0-9a-f]{32}-\d+)$")
PORT_DOCS = {"AWS-StartPortForwardingSession": {"portNumber"},
             "AWS-StartPortForwardingSessionToRemoteHost": {"portNumber", "host"}}
BATCH_STATUSES = {"SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class FakeAws:
    """Seed `jobs` (jobId -> JobDetail dict) and `tasks` (taskArn -> ECS Task dict); point
    AWS_ENDPOINT_URL_BATCH / _SSM (/ _ECS) at `url`."""

    def __init__(self, agent=None, region: str = "us-east-1",
                 credentials: tuple[str, str] = ("AKIATESTTESTTESTTEST", "testing")):
        self.agent = agent
        self.region = region
        self.credentials = credentials
        self.internal_errors: list[str] = []
        self.jobs: dict[str, dict] = {}
        self.tasks: dict[str, dict] = {}
        self.connected: set[str] = set()  # SSM targets whose agent is online
        self.deny: set[str] = set()  # operations answered with AccessDeniedException
        self.calls: list[tuple[str, dict]] = []
        self.sessions: dict[str, dict] = {}
        self._server = ApiHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeAws":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def ops(self, name: str) -> list[dict]:
        return [body for op, body in self.calls if op == name]

    # ---- request plumbing ----
    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    try:
                        status, body = fake._dispatch(self.path, dict(self.headers), raw)
                    except ApiError:
                        raise
                    except Exception as exc:  # a gap in this fake: answer, and make the test fail
                        fake.internal_errors.append(f"{self.path}: {exc!r}")
                        raise ApiError(500, "InternalFailure", "internal failure") from exc
                    extra = {}
                except ApiError as exc:
                    status, body = exc.status, {"__type": exc.code, "message": exc.message}
                    extra = {"x-amzn-ErrorType": exc.code}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                fake_error = json.dumps({"message": "Missing Authentication Token"}).encode()
                self.send_response(403)
                self.send_header("Content-Length", str(len(fake_error)))
                self.end_headers()
                self.wfile.write(fake_error)

        return Handler

    def _auth(self, path: str, headers: dict, raw: bytes, service: str) -> None:
        h = {k.lower(): v for k, v in headers.items()}
        auth = h.get("authorization")
        if not auth:
            raise ApiError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        m = AUTH_RE.match(auth)
        if not m or "x-amz-date" not in h:
            raise ApiError(403, "IncompleteSignatureException", "Authorization header is not a valid SigV4 signature")
        if m["service"] != service or m["region"] != self.region:
            raise ApiError(403, "InvalidSignatureException",
                           f"Credential should be scoped to a valid region/service ({self.region}/{service})")
        signed = m["signed"].split(";")
        if "host" not in signed or "x-amz-date" not in signed or not set(signed) <= set(h):
            raise ApiError(403, "IncompleteSignatureException", "host and x-amz-date must be signed, and every "
                           "signed header sent")
        amz_date = h["x-amz-date"]
        try:
            when = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            raise ApiError(403, "IncompleteSignatureException", f"invalid X-Amz-Date {amz_date!r}") from None
        if m["date"] != amz_date[:8]:
            raise ApiError(403, "InvalidSignatureException", f"Date in Credential scope does not match YYYYMMDD "
                           f"from ISO-8601 version of date from HTTP: '{m['date']}' != '{amz_date[:8]}'")
        if abs(time.time() - when) > 15 * 60:
            raise ApiError(403, "InvalidSignatureException", f"Signature expired: {amz_date} is more than 15 "
                           "minutes from the server's time")
        akid, secret = self.credentials
        if m["akid"] != akid:
            raise ApiError(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        if not hmac.compare_digest(m["sig"], _signature(path, h, raw, signed, service, self.region, akid, secret)):
            raise ApiError(403, "InvalidSignatureException", "The request signature we calculated does not match "
                           "the signature you provided.")

    def _dispatch(self, path: str, headers: dict, raw: bytes) -> tuple[int, Any]:
        h = {k.lower(): v for k, v in headers.items()}
        target = h.get("x-amz-target")
        if target:
            service = "ssm" if target.startswith("AmazonSSM.") else "ecs"
            self._auth(path, headers, raw, service)
            if h.get("content-type") != "application/x-amz-json-1.1":
                raise ApiError(400, "SerializationException", "bad content type")
            body = _json(raw)
            op = target.split(".", 1)[1]
            self.calls.append((op, body))
            if op in self.deny:
                raise ApiError(400, "AccessDeniedException", f"User is not authorized to perform: {service}:{op}")
            fn = {"AmazonSSM.StartSession": self.start_session, "AmazonSSM.ResumeSession": self.resume_session,
                  "AmazonSSM.TerminateSession": self.terminate_session,
                  "AmazonEC2ContainerServiceV20141113.DescribeTasks": self.describe_tasks}.get(target)
            if fn is None:
                raise ApiError(400, "UnknownOperationException", f"unknown operation {target}")
            return 200, fn(body)
        self._auth(path, headers, raw, "batch")
        if (h.get("content-type") or "").split(";")[0].strip() != "application/json":
            raise ApiError(415, "UnsupportedMediaTypeException", f"Unsupported Media Type: {h.get('content-type')}")
        body = _json(raw)
        op = {"/v1/describejobs": "DescribeJobs", "/v1/listjobs": "ListJobs"}.get(path)
        if op is None:
            raise ApiError(404, "UnknownOperationException", f"no route {path}")
        self.calls.append((op, body))
        if op in self.deny:
            raise ApiError(403, "AccessDeniedException", f"User is not authorized to perform: batch:{op}")
        return 200, (self.describe_jobs(body) if op == "DescribeJobs" else self.list_jobs(body))

    # ---- Batch ----
    def describe_jobs(self, body: dict) -> dict:
        _only(body, {"jobs"})
        jobs = body.get("jobs")
        if not isinstance(jobs, list) or not all(isinstance(j, str) for j in jobs):
            raise ApiError(400, "ClientException", "jobs must be a list of strings")
        if len(jobs) > 100:
            raise ApiError(400, "ClientException", "A maximum of 100 jobs may be described")
        return {"jobs": [self.jobs[j] for j in jobs if j in self.jobs]}

    def list_jobs(self, body: dict) -> dict:
        _only(body, {"jobQueue", "arrayJobId", "multiNodeJobId", "jobStatus", "maxResults", "nextToken", "filters"})
        keys = [k for k in ("jobQueue", "arrayJobId", "multiNodeJobId") if k in body]
        if len(keys) != 1:
            raise ApiError(400, "ClientException", "exactly one of jobQueue, arrayJobId, multiNodeJobId is required")
        status = body.get("jobStatus", "RUNNING")
        if status not in BATCH_STATUSES:
            raise ApiError(400, "ClientException", f"invalid jobStatus {status}")
        key, value = keys[0], body[keys[0]]
        out = []
        for job in self.jobs.values():
            if job["status"] != status:
                continue
            if key == "jobQueue" and job["jobQueue"] not in (value,) and not job["jobQueue"].endswith("/" + value):
                continue
            if key == "jobQueue" and ("#" in job["jobId"] or ":" in job["jobId"]):
                continue  # children are listed through their parent
            if key == "arrayJobId" and not job["jobId"].startswith(value + ":"):
                continue
            if key == "multiNodeJobId" and not job["jobId"].startswith(value + "#"):
                continue
            summary = {k: job[k] for k in ("jobArn", "jobId", "jobName", "createdAt", "status") if k in job}
            for k in ("startedAt", "arrayProperties", "jobDefinition"):
                if k in job:
                    summary[k] = job[k]
            if "nodeDetails" in job:
                summary["nodeProperties"] = dict(job["nodeDetails"])
            out.append(summary)
        page = body.get("maxResults", 100)
        if type(page) is not int:
            raise ApiError(400, "SerializationException", "maxResults must be an integer")
        if not 1 <= page <= 1000:
            raise ApiError(400, "ClientException", "maxResults must be between 1 and 1000")
        token = body.get("nextToken", "0")
        if not isinstance(token, str) or not token.isdigit() or int(token) > len(out):
            raise ApiError(400, "ClientException", "Invalid nextToken")
        start = int(token)
        result = {"jobSummaryList": out[start:start + page]}
        if start + page < len(out):
            result["nextToken"] = str(start + page)
        return result

    # ---- SSM ----
    def start_session(self, body: dict) -> dict:
        _only(body, {"Target", "DocumentName", "Reason", "Parameters"})
        target = body.get("Target")
        if not isinstance(target, str) or not TARGET_RE.match(target):
            raise ApiError(400, "ValidationException", "1 validation error detected: Value at 'target' failed")
        reason = body.get("Reason", "r")
        if not isinstance(reason, str):
            raise ApiError(400, "SerializationException", "Reason must be a string")
        if not 1 <= len(reason) <= 256:
            raise ApiError(400, "ValidationException", "1 validation error detected: Value at 'reason' failed to "
                           "satisfy constraint: Member must have length between 1 and 256")
        doc = body.get("DocumentName", "SSM-SessionManagerRunShell")
        params = body.get("Parameters", {})
        if not isinstance(params, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in params.values()):
            raise ApiError(400, "ValidationException", "Parameters must map names to lists of strings")
        required = PORT_DOCS.get(doc)
        if required is None:
            raise ApiError(400, "InvalidDocument", f"document {doc} is not a port-forwarding document here")
        allowed = required | {"localPortNumber"}
        if not required <= set(params) or not set(params) <= allowed:
            raise ApiError(400, "InvalidParameters", f"{doc} needs {sorted(required)}")
        for name, values in params.items():
            if len(values) != 1:
                raise ApiError(400, "InvalidParameters", f"{name} takes exactly one value")
            if name.lower().endswith("portnumber") and not (values[0].isascii() and values[0].isdigit()
                                                     and 0 <= int(values[0]) <= 65535):
                raise ApiError(400, "InvalidParameters", f"{name} must be a port number between 0 and 65535")
        if int(params["portNumber"][0]) == 0:
            raise ApiError(400, "InvalidParameters", "portNumber must be a port number between 1 and 65535")
        if target not in self.connected:
            raise ApiError(400, "TargetNotConnected", f"{target} is not connected.")
        sid = f"dbgfwd-test-{uuid.uuid4().hex[:17]}"
        token, url = self.agent.create_session(sid, target, doc, params)
        self.sessions[sid] = {"target": target, "terminated": False}
        return {"SessionId": sid, "TokenValue": token, "StreamUrl": url}

    def resume_session(self, body: dict) -> dict:
        _only(body, {"SessionId"})
        sid = body.get("SessionId")
        sess = self.sessions.get(sid) if isinstance(sid, str) else None
        if sess is None or sess["terminated"]:
            raise ApiError(400, "DoesNotExistException", f"Session {sid} does not exist or was terminated")
        token = self.agent.resume_session(sid)
        url = f"ws://127.0.0.1:{self.agent.port}/v1/data-channel/{sid}?role=publish_subscribe&cell-number=AAEAAQ"
        return {"SessionId": sid, "TokenValue": token, "StreamUrl": url}

    def terminate_session(self, body: dict) -> dict:
        _only(body, {"SessionId"})
        sid = body.get("SessionId")
        if not isinstance(sid, str):
            raise ApiError(400, "ValidationException", "SessionId is required")
        if sid in self.sessions:
            self.sessions[sid]["terminated"] = True
            self.agent.end_session(sid, "TerminateSession")
        return {"SessionId": sid}

    # ---- ECS ----
    def describe_tasks(self, body: dict) -> dict:
        _only(body, {"cluster", "tasks", "include"})
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise ApiError(400, "InvalidParameterException", "tasks must be a non-empty list")
        found = [self.tasks[t] for t in tasks if t in self.tasks]
        failures = [{"arn": t, "reason": "MISSING"} for t in tasks if t not in self.tasks]
        return {"tasks": found, "failures": failures}


def _signature(path: str, h: dict, raw: bytes, signed: list[str], service: str, region: str,
               akid: str, secret: str) -> str:
    """What the signature of this request must be, computed by botocore's own SigV4 signer over the
    headers the client said it signed."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url=f"http://{h['host']}{path}", data=raw,
                         headers={name: h[name] for name in signed})
    request.context["timestamp"] = h["x-amz-date"]
    signer = SigV4Auth(Credentials(akid, secret, h.get("x-amz-security-token")), service, region)
    return signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)


def _json(raw: bytes) -> dict:
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise ApiError(400, "SerializationException", "request body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "SerializationException", "request body must be a JSON object")
    return body


def _only(body: dict, allowed: set[str]) -> None:
    unknown = set(body) - allowed
    if unknown:
        raise ApiError(400, "SerializationException", f"unexpected members {sorted(unknown)}")
