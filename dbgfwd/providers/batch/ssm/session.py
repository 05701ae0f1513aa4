"""One SSM port-forwarding session (StartSession -> data channel -> smux), as a context manager.

An SSM port session reaches exactly one port on its target, so the provider keeps one session per
(target, remote port) and opens one smux stream in it per accepted local connection.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, Callable

from dbgfwd.errors import DbgfwdError, UpstreamError
from dbgfwd.providers.batch.aws import AwsContext, call
from dbgfwd.providers.batch.ssm import message as m
from dbgfwd.providers.batch.ssm.channel import DataChannel
from dbgfwd.providers.batch.ssm.smux import SmuxClient, SmuxError
from dbgfwd.net.websocket import WebSocketError

log = logging.getLogger("dbgfwd.batch.ssm")


class PortSession:
    """`start()` opens the session; `open_stream()` gives a socket per connection; `close()` ends it."""

    def __init__(self, ssm: Any, ctx: AwsContext, request: dict, *, label: str,
                 keepalive_interval: float = 60.0, resume_timeout: float = 120.0):
        self._ssm, self._ctx, self._request = ssm, ctx, request
        self.label = label
        self.session_id = ""
        self._keepalive_interval = keepalive_interval
        self._resume_timeout = resume_timeout
        self.channel: DataChannel | None = None
        self.mux: SmuxClient | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    @property
    def target(self) -> str:
        return self._request["Target"]

    @property
    def alive(self) -> bool:
        return self.channel is not None and not self.channel.closed.is_set()

    def start(self, timeout: float) -> "PortSession":
        resp = call(self._ctx, "ssm:StartSession", self._ssm.start_session, self.target, **self._request)
        self.session_id = resp["SessionId"]
        log.info("%s: SSM session %s started (%s)", self.label, self.session_id, self._request["DocumentName"])
        mux = SmuxClient(self._send)
        self.mux = mux
        self.channel = DataChannel(resp["StreamUrl"], resp["TokenValue"], on_output=self._feed,
                                   on_closed=self._on_closed, resume=self._resume,
                                   resume_timeout=self._resume_timeout, label=self.label)
        try:
            self.channel.start()
            handshake = self.channel.wait_handshake(timeout)
        except WebSocketError as exc:
            self.close()
            raise UpstreamError(f"{self.label}: cannot open the SSM data channel: {exc}") from None
        except DbgfwdError:
            self.close()
            raise
        if not handshake.multiplexed:
            self.close()
            raise UpstreamError(
                f"{self.label}: SSM agent {handshake.agent_version or '?'} cannot multiplex port-forwarding "
                "connections (needs amazon-ssm-agent >= 3.0.196.0)",
                hint="update amazon-ssm-agent on the instance, or use --ssm-backend plugin", retryable=False)
        threading.Thread(target=self._keepalive_loop, name=f"dbgfwd-{self.label}-keepalive",
                         daemon=True).start()
        return self

    def __enter__(self) -> "PortSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, data: bytes) -> None:
        assert self.channel is not None
        self.channel.send_output(data)

    def _feed(self, data: bytes) -> None:
        assert self.mux is not None
        try:
            self.mux.feed(data)
        except SmuxError as exc:
            raise UpstreamError(f"{self.label}: {exc}") from None

    def _resume(self):
        resp = call(self._ctx, "ssm:ResumeSession", self._ssm.resume_session, self.target,
                    SessionId=self.session_id)
        log.info("%s: SSM session %s resumed", self.label, self.session_id)
        return resp["TokenValue"], resp.get("StreamUrl")

    def _on_closed(self, reason: str) -> None:
        self._stop.set()
        if self.mux is not None:
            self.mux.close()

    def open_stream(self) -> socket.socket:
        if not self.alive or self.mux is None:
            reason = self.channel.close_reason if self.channel else "not started"
            raise UpstreamError(f"{self.label}: SSM session is closed ({reason})")
        try:
            return self.mux.open()
        except (SmuxError, DbgfwdError) as exc:
            raise UpstreamError(f"{self.label}: cannot open a stream: {exc}") from None

    def keepalive(self) -> None:
        """Keep the session from idling out: a websocket ping plus an smux NOP (real input data,
        which is what the agent's idle timer counts) - a rank at a breakpoint sends nothing."""
        if not self.alive or self.channel is None or self.mux is None:
            return
        self.channel.ping()
        try:
            self.mux.nop()
        except DbgfwdError:
            pass

    def _keepalive_loop(self) -> None:
        while not self._stop.wait(self._keepalive_interval):
            self.keepalive()

    def close(self) -> None:
        with self._lock:
            if self._stop.is_set() and self.channel is None:
                return
            self._stop.set()
            channel, self.channel = self.channel, None
        if self.mux is not None:
            self.mux.close()
        if channel is not None:
            # As the plugin does: tell the agent the session is over before hanging up (bounded: a full
            # window or a dead websocket must not hold up closing).
            flag = threading.Thread(target=self._terminate_flag, args=(channel,), daemon=True)
            flag.start()
            flag.join(1.0)
            channel.close()
        if self.session_id:
            try:
                call(self._ctx, "ssm:TerminateSession", self._ssm.terminate_session, self.target,
                     SessionId=self.session_id)
            except DbgfwdError as exc:
                log.debug("%s: terminate_session: %s", self.label, exc)


    def _terminate_flag(self, channel) -> None:
        try:
            if channel.handshake_done.is_set() and not channel.closed.is_set():
                channel.send_flag(m.FLAG_TERMINATE_SESSION)
                channel.wait_acknowledged(0.9)  # hang up only once the agent has it (the caller bounds us)
        except DbgfwdError:
            pass


def port_request(target: str, port: int, host: str | None = None) -> dict:
    """start_session kwargs for a port on the target's loopback, or on `host` as seen from it."""
    if host:
        return {"Target": target, "DocumentName": "AWS-StartPortForwardingSessionToRemoteHost",
                "Parameters": {"host": [host], "portNumber": [str(port)], "localPortNumber": ["0"]}}
    return {"Target": target, "DocumentName": "AWS-StartPortForwardingSession",
            "Parameters": {"portNumber": [str(port)], "localPortNumber": ["0"]}}


Factory = Callable[[dict, str], PortSession]
