"""The Port-session handshake: what the agent asks for, and what the native client answers."""

from __future__ import annotations

from dataclasses import dataclass

from dbgfwd.errors import UpstreamError
from dbgfwd.providers.batch.ssm import message as m

CLIENT_VERSION = "1.2.694.0"  # > 1.2.331.0: agent uses smux without requiring NOP keepalives
MUX_MIN_AGENT = (3, 0, 196, 0)


@dataclass(frozen=True)
class Handshake:
    agent_version: str
    session_type: str
    properties: dict

    @property
    def multiplexed(self) -> bool:
        return (self.properties.get("type") == "LocalPortForwarding"
                and m.version_tuple(self.agent_version) >= MUX_MIN_AGENT)


def respond(msg: m.AgentMessage) -> tuple[dict, Handshake, list[str]]:
    """(response body, what was agreed, what the native client cannot do) for a HandshakeRequest."""
    bad = UpstreamError("SSM agent sent an unreadable handshake request", retryable=False)
    try:
        req = msg.json()
        actions = req.get("RequestedClientActions") or []
    except (ValueError, AttributeError):
        raise bad from None
    if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
        raise bad
    processed, errors = [], []
    session_type, props = "", {}
    for action in actions:
        kind = action.get("ActionType")
        if kind == "SessionType":
            params = action.get("ActionParameters") or {}
            if not isinstance(params, dict) or not isinstance(params.get("Properties") or {}, dict):
                raise bad
            session_type = str(params.get("SessionType", ""))
            props = params.get("Properties") or {}
            processed.append({"ActionType": kind, "ActionStatus": 1})
        else:  # KMSEncryption and anything newer: not supported natively
            processed.append({"ActionType": kind, "ActionStatus": 2})
            errors.append(f"{kind} is not supported by the dbgfwd native SSM client")
    body = {"ClientVersion": CLIENT_VERSION, "ProcessedClientActions": processed, "Errors": errors or None}
    return body, Handshake(str(req.get("AgentVersion", "")), session_type, dict(props)), errors
