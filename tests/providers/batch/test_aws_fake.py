"""The strict AWS stand-in rejects what the real endpoints reject, with the real error codes.

Requests are signed here with botocore's own signer, then broken one way at a time."""

from __future__ import annotations

import datetime
import json
import socket
import struct
import urllib.request
from urllib.error import HTTPError

import pytest

from tests.support import ssm_ws
from tests.support.aws_fake import FakeAws
from tests.support.ssm_agent import TestSsmAgent

KEY, SECRET, REGION = "AKIATESTTESTTESTTEST", "testing", "us-east-1"
SSM = "AmazonSSM.StartSession"


@pytest.fixture
def fake():
    with TestSsmAgent() as agent, FakeAws(agent, REGION) as f:
        f.connected.add("i-0123456789abcdef0")
        yield f


def call(fake, body, *, target=SSM, path="/", service=None, secret=SECRET, key=KEY, when=None,
         content_type=None, tamper=None):
    """POST `body` signed as botocore signs it; `tamper(headers)` edits the signed request before sending."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    raw = json.dumps(body).encode()
    headers = {"Content-Type": content_type or ("application/x-amz-json-1.1" if target else "application/json")}
    if target:
        headers["X-Amz-Target"] = target
    service = service or ("ssm" if target else "batch")
    req = AWSRequest(method="POST", url=fake.url + path, data=raw, headers=headers)
    signer = SigV4Auth(Credentials(key, secret), service, REGION)
    if when is None:
        signer.add_auth(req)
    else:
        import botocore.auth

        real = botocore.auth.get_current_datetime
        botocore.auth.get_current_datetime = lambda: when
        try:
            signer.add_auth(req)
        finally:
            botocore.auth.get_current_datetime = real
    sent = dict(req.headers.items())
    if tamper:
        raw = tamper(sent, raw) or raw
    http = urllib.request.Request(fake.url + path, data=raw, method="POST", headers=sent)
    try:
        with urllib.request.urlopen(http, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except HTTPError as exc:
        return exc.code, json.loads(exc.read())


def start(**params):
    body = {"Target": "i-0123456789abcdef0", "DocumentName": "AWS-StartPortForwardingSession",
            "Parameters": {"portNumber": ["5678"]}}
    body.update(params)
    return body


def test_a_request_signed_by_botocore_is_accepted(fake):
    status, body = call(fake, start(Reason="dbgfwd rank 0"))
    assert status == 200 and body["SessionId"]
    assert fake.internal_errors == []


def _swap_sig(headers, raw):
    auth = headers["Authorization"]
    headers["Authorization"] = auth[:-64] + ("0" if auth[-1] != "0" else "1") * 64


def _other_body(headers, raw):
    return raw.replace(b"5678", b"5679")


def _other_target(headers, raw):
    headers["X-Amz-Target"] = "AmazonSSM.TerminateSession"


_NOW = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


@pytest.mark.parametrize("kw,code,text", [
    ({"tamper": _swap_sig}, "InvalidSignatureException", "does not match"),
    ({"tamper": _other_body}, "InvalidSignatureException", "does not match"),
    ({"tamper": _other_target}, "InvalidSignatureException", "does not match"),
    ({"secret": "not-the-secret"}, "InvalidSignatureException", "does not match"),
    ({"key": "AKIAOTHEROTHEROTHER0"}, "UnrecognizedClientException", "security token"),
    ({"when": _NOW - datetime.timedelta(minutes=20)}, "InvalidSignatureException", "Signature expired"),
    ({"when": _NOW + datetime.timedelta(minutes=20)}, "InvalidSignatureException", "Signature expired"),
    ({"tamper": lambda h, r: h.update({"X-Amz-Date": (_NOW - datetime.timedelta(days=1)).strftime("%Y%m%dT%H%M%SZ")})},
     "InvalidSignatureException", "Credential scope does not match"),
    ({"service": "ecs"}, "InvalidSignatureException", "scoped to a valid region/service"),
])
def test_signatures_the_real_service_rejects(fake, kw, code, text):
    status, body = call(fake, start(), **kw)
    assert (status, body["__type"]) == (403, code) and text in body["message"]
    assert fake.ops("StartSession") == []  # rejected before the operation ran


@pytest.mark.parametrize("params,code", [
    ({"Parameters": {"portNumber": ["70000"]}}, "InvalidParameters"),
    ({"Parameters": {"portNumber": ["5678", "5679"]}}, "InvalidParameters"),
    ({"Parameters": {"portNumber": []}}, "InvalidParameters"),
    ({"Parameters": {"portNumber": ["0"]}}, "InvalidParameters"),
    ({"Parameters": {"portNumber": ["5678"], "localPortNumber": ["-1"]}}, "InvalidParameters"),
    ({"Reason": 123}, "SerializationException"),
    ({"Reason": "x" * 257}, "ValidationException"),
])
def test_start_session_requests_the_real_service_rejects(fake, params, code):
    status, body = call(fake, start(**params))
    assert (status, body["__type"]) == (400, code)
    assert fake.internal_errors == [] and fake.sessions == {}


@pytest.mark.parametrize("extra,status,code", [
    ({"maxResults": 5000}, 400, "ClientException"),
    ({"maxResults": 0}, 400, "ClientException"),
    ({"maxResults": "abc"}, 400, "SerializationException"),
    ({"nextToken": "garbage"}, 400, "ClientException"),
    ({"nextToken": 5}, 400, "ClientException"),
])
def test_list_jobs_requests_the_real_service_rejects(fake, extra, status, code):
    got, body = call(fake, {"jobQueue": "q", **extra}, target=None, path="/v1/listjobs")
    assert (got, body["__type"]) == (status, code)
    assert fake.internal_errors == []


def test_batch_route_takes_json_only(fake):
    assert call(fake, {"jobQueue": "q"}, target=None, path="/v1/listjobs")[0] == 200
    status, body = call(fake, {"jobQueue": "q"}, target=None, path="/v1/listjobs", content_type="text/plain")
    assert (status, body["__type"]) == (415, "UnsupportedMediaTypeException")


# ---- the data channel's websocket ----

def _upgrade(agent, key):
    sock = socket.create_connection(("127.0.0.1", agent.port), timeout=10)
    sock.sendall((f"GET /v1/data-channel/x?role=publish_subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                  f"Sec-WebSocket-Key: {key}\r\n\r\n").encode())
    return sock


def test_data_channel_refuses_a_key_that_is_not_16_bytes(fake):
    sock = _upgrade(fake.agent, "x")
    answer = b""
    while chunk := sock.recv(100):  # the agent records the violation, then closes
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 400")
    assert any("bad websocket upgrade" in v for v in fake.agent.violations)


def _masked(b0, payload):
    mask = b"\x01\x02\x03\x04"
    return bytes([b0, 0x80 | len(payload)] if len(payload) < 126 else [b0, 0x80 | 126]) + \
        (struct.pack(">H", len(payload)) if len(payload) >= 126 else b"") + mask + \
        bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


@pytest.mark.parametrize("frame,why", [
    (_masked(0x89, b"p" * 200), "control frame longer than 125 bytes"),
    (_masked(0x09, b"ping"), "fragmented"),
    (_masked(0x80, b"more"), "continuation frame with nothing to continue"),
    (_masked(0x02, b"part") + _masked(0x82, b"new"), "new data frame inside a fragmented message"),
])
def test_data_channel_framing_the_real_endpoint_rejects(frame, why):
    """ServerSocket.recv on a loopback pair: the violation is raised, not processed or answered."""
    a, b = socket.socketpair()
    with a, b:
        a.sendall(frame)
        with pytest.raises(ssm_ws.ProtocolViolation, match=why):
            ssm_ws.ServerSocket(b).recv()
        a.setblocking(False)
        try:
            assert a.recv(100) == b""  # no pong, nothing sent back
        except BlockingIOError:
            pass
