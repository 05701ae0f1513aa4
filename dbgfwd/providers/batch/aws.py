"""boto3 sessions/clients and the translation of AWS failures into one-line dbgfwd errors.

boto3 is imported inside functions only. Profiles, SSO, regions and endpoints resolve exactly as
the AWS CLI resolves them (botocore also honours AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE>,
which the tests use to point at loopback servers).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from dbgfwd.errors import AuthError, DbgfwdError, NotFoundError, ProviderUnavailable, UnreachableError, UsageError

log = logging.getLogger("dbgfwd.batch")

_SSO_EXPIRED = ("SSOTokenLoadError", "UnauthorizedSSOTokenError", "TokenRetrievalError", "SSOError")
_DENIED = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException",
           "InvalidClientTokenId", "SignatureDoesNotMatch")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+-\d+$")
_EXPIRED = ("ExpiredToken", "ExpiredTokenException", "RequestExpired")


@dataclass(frozen=True)
class AwsContext:
    profile: str | None
    region: str | None
    known_region: bool = True  # botocore's endpoint data lists it (False: a typo, or a very new region)

    def describe(self) -> str:
        return f"region {self.region or '?'}" + (f", profile {self.profile}" if self.profile else "")

    def login_hint(self) -> str:
        if self.profile:
            return f"run `aws sso login --profile {self.profile}` (SSO) or `aws configure --profile {self.profile}`"
        return "run `aws configure` or `aws sso login`, or set AWS_PROFILE"


class Clients:
    """Lazily created boto3 clients sharing one session (thread-safe once created)."""

    def __init__(self, profile: str | None, region: str | None):
        try:
            import boto3
            import botocore.exceptions
        except ImportError:  # pragma: no cover - boto3 is a dependency
            raise ProviderUnavailable("boto3 is not installed", hint="pip install boto3") from None
        try:
            self._session = boto3.session.Session(profile_name=profile, region_name=region)
        except botocore.exceptions.ProfileNotFound:
            raise UsageError(f"AWS profile {profile!r} is not configured",
                             hint="check --profile / AWS_PROFILE against ~/.aws/config") from None
        region = self._session.region_name
        if not region:
            raise UsageError("no AWS region configured",
                             hint="pass --region, set AWS_REGION, or set region in ~/.aws/config")
        if not REGION_RE.match(region):
            raise UsageError(f"{region!r} is not an AWS region name",
                             hint="pass --region like us-east-1 (or fix AWS_REGION / ~/.aws/config)")
        known = set()
        for partition in self._session.get_available_partitions():
            known.update(self._session.get_available_regions("batch", partition))
        self.ctx = AwsContext(profile, region, region in known)
        self._clients: dict[str, Any] = {}
        import threading
        self._lock = threading.Lock()

    def __call__(self, service: str):
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                from botocore.config import Config
                cfg = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=30)
                client = self._clients[service] = self._session.client(service, config=cfg)
            return client


def translate(exc: BaseException, ctx: AwsContext, action: str, subject: str = "") -> DbgfwdError:
    """Map a botocore exception raised by `action` (e.g. "ssm:StartSession") to a DbgfwdError."""
    import botocore.exceptions as be

    about = f" on {subject}" if subject else ""
    name = type(exc).__name__
    if isinstance(exc, be.NoCredentialsError):
        return AuthError(f"no AWS credentials found ({ctx.describe()})", hint=ctx.login_hint())
    if name in _SSO_EXPIRED or isinstance(exc, getattr(be, "SSOTokenLoadError", ())):
        return AuthError(f"the AWS SSO session has expired ({ctx.describe()})",
                         hint=f"run `aws sso login{' --profile ' + ctx.profile if ctx.profile else ''}`")
    if isinstance(exc, be.EndpointConnectionError) and not ctx.known_region:
        return UsageError(f"unknown AWS region {ctx.region!r}: its endpoint for {action} cannot be reached",
                          hint="check --region (e.g. us-east-1), AWS_REGION or ~/.aws/config")
    if isinstance(exc, (be.EndpointConnectionError, be.ConnectTimeoutError, be.ReadTimeoutError)):
        return UnreachableError(f"cannot reach the AWS API for {action} ({ctx.describe()})",
                                hint="check network access / proxy settings to AWS")
    if isinstance(exc, be.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        text = str(err.get("Message", "")).split("\n")[0][:200]
        if code in _EXPIRED:
            return AuthError(f"AWS credentials have expired ({ctx.describe()})", hint=ctx.login_hint())
        if code in _DENIED:
            return AuthError(f"AccessDenied: not allowed to call {action}{about} ({ctx.describe()})",
                             hint=f"grant {action} to your IAM identity (or use a --profile that has it)")
        if code == "TargetNotConnected":
            if subject.startswith("ecs:"):
                return UnreachableError(
                    f"the ECS Exec agent is not running in task {subject} (TargetNotConnected)",
                    hint="run the job with enableExecuteCommand, give its task role ssmmessages:* and wait "
                         "until `aws ecs describe-tasks` shows ExecuteCommandAgent RUNNING")
            return UnreachableError(
                f"SSM target {subject} is not connected to Session Manager (TargetNotConnected)",
                hint="the instance needs a running amazon-ssm-agent and an instance profile with "
                     "AmazonSSMManagedInstanceCore (check `aws ssm describe-instance-information`)")
        if code in ("InvalidDocument", "InvalidParameters", "InvalidDocumentVersion"):
            return UsageError(f"{action}{about} rejected the request: {code}: {text}")
        if code in ("DoesNotExistException", "InvalidInstanceId", "ClientException") and "not found" in text.lower():
            return NotFoundError(f"{action}{about}: {text}")
        return UnreachableError(f"{action}{about} failed: {code}: {text}")
    if isinstance(exc, be.BotoCoreError):
        return UnreachableError(f"{action}{about} failed: {exc}")
    return UnreachableError(f"{action}{about} failed: {name}")


def call(ctx: AwsContext, action: str, fn, subject: str = "", **kwargs):
    """Call a boto3 operation, turning its failures into DbgfwdErrors (never leaking secrets)."""
    import botocore.exceptions as be

    try:
        return fn(**kwargs)
    except (be.BotoCoreError, be.ClientError) as exc:
        raise translate(exc, ctx, action, subject) from None
