"""A provider that handles secrets carelessly on purpose, to prove dbgfwd never lets them out.

It logs what real SDKs log at debug level (kube bearer tokens, OpenShift OAuth tokens, SSM
start_session responses with TokenValue and StreamUrl, presigned URLs, SSH key passphrases),
puts secrets in Target.detail and in error messages, and fails probes with tracebacks that carry
them. Tests run the real CLI with it registered (see `run_cli`) and grep every output for SECRETS.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from dbgfwd.errors import AuthError, UpstreamError
from dbgfwd.providers.base import Capability, Discovery, Provider, ProviderOption, RankInfo, Target

KUBE_TOKEN = ("eyJhbGciOiJSUzI1NiIsImtpZCI6ImxlYWt5In0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bWw6ZGVmYXVsdCJ9."
              "KubeSig0123456789abcdefLEAK")
OAUTH_TOKEN = "sha256~OpenShiftOAuthLEAK0123456789abcdef"
SSM_TOKEN = "AAEAAVssmTokenValueLEAK0123456789+/abc=="
SIGNATURE = "a1b2c3d4e5f6presignedLEAK0123456789"
PASSPHRASE = "correct-horse-LEAK-passphrase"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYLEAKKEY"
SECRETS = (KUBE_TOKEN, OAUTH_TOKEN, SSM_TOKEN, SIGNATURE, PASSPHRASE, AWS_SECRET,
           # distinctive fragments, in case a secret is cut rather than dropped
           "KubeSig0123456789", "OpenShiftOAuthLEAK", "ssmTokenValueLEAK", "presignedLEAK", "LEAK-passphrase",
           "CYLEAKKEY")
STREAM_URL = (f"wss://ssmmessages.us-east-1.amazonaws.com/v1/data-channel/sess-1?role=publish_subscribe"
              f"&X-Amz-Signature={SIGNATURE}")
PRESIGNED = f"https://bucket.s3.amazonaws.com/logs/x?X-Amz-Credential=AKIA%2F1&X-Amz-Signature={SIGNATURE}"

log = logging.getLogger("dbgfwd.providers.leaky")


class LeakyProvider(Provider):
    name = "leaky"
    title = "Leaky (tests)"
    capabilities = frozenset({Capability.OUT_OF_BAND_READINESS, Capability.REDISCOVERY})
    options = (ProviderOption("leaky_port", ("--leaky-port",), "upstream port", type=int),
               ProviderOption("leaky_fail", ("--leaky-fail",), "fail discovery with an auth error", type=bool,
                              default=False),
               ProviderOption("leaky_crash", ("--leaky-crash",), "fail discovery with a bug (not a DbgfwdError)",
                              type=bool, default=False))
    keepalive_interval = 1.0

    @classmethod
    def claims(cls, config) -> bool:
        return False

    def discover(self) -> Discovery:
        log.debug("GET https://10.0.0.1:6443/api/v1/namespaces/ml/pods headers={'Authorization': 'Bearer %s'}",
                  KUBE_TOKEN)
        logging.getLogger("urllib3.connectionpool").debug("send: b'GET /apis HTTP/1.1\\r\\nAuthorization: Bearer %s'",
                                                          OAUTH_TOKEN)
        logging.getLogger("botocore.endpoint").debug(
            "Response body: {'SessionId': 'sess-1', 'TokenValue': '%s', 'StreamUrl': '%s'}", SSM_TOKEN, STREAM_URL)
        logging.getLogger("botocore.credentials").debug("aws_secret_access_key=%s", AWS_SECRET)
        logging.getLogger("paramiko.transport").debug("loading key with passphrase=%s", PASSPHRASE)
        log.info("presigned log URL %s", PRESIGNED)
        if self.config.opt("leaky_crash"):
            raise KeyError(f"a bug near {STREAM_URL}")
        if self.config.opt("leaky_fail"):
            raise AuthError(f"token {KUBE_TOKEN!r} rejected by {STREAM_URL}", hint=f"passphrase={PASSPHRASE}")
        port = int(self.config.opt("leaky_port"))
        target = Target(key="t0", name="leaky-0", ranks=(RankInfo(0, 0, port),),
                        detail={"logs": PRESIGNED, "auth": f"Bearer {KUBE_TOKEN}", "session": f"TokenValue={SSM_TOKEN}"})
        return Discovery(targets=(target,), where=f"in the leaky lab ({STREAM_URL})")

    def probe(self, target: Target):
        raise RuntimeError(f"exec failed: wss://10.0.0.1:6443/exec?token={KUBE_TOKEN} Authorization: Bearer {OAUTH_TOKEN}")

    def open_stream(self, target: Target, port: int, timeout: float):
        raise UpstreamError(f"SSM refused {STREAM_URL} with TokenValue={SSM_TOKEN}", retryable=False)

    def keepalive(self) -> None:
        log.debug("keepalive ping with passphrase '%s'", PASSPHRASE)


BOOT = ("import sys; from dbgfwd.providers import REGISTRY; "
        "REGISTRY['leaky'] = 'tests.support.leaky_provider:LeakyProvider'; "
        "from dbgfwd.cli import main; main(sys.argv[1:])")


def cli_command(*args: str) -> list[str]:
    """argv running the real dbgfwd CLI with this provider registered."""
    return [sys.executable, "-c", BOOT, *args]


def cli_env() -> dict:
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, NO_COLOR="1")
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
