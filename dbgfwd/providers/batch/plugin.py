"""`--ssm-backend plugin`: one session-manager-plugin process per SSM port session.

dbgfwd calls StartSession itself (so errors read the same as the native backend), then hands the
session to the plugin the way the AWS CLI does: the StartSession response in an environment variable
whose name is the plugin's first argument (the plugin unsets it), so the session token never appears
in `ps`. localPortNumber asks for a free loopback port, but the plugin takes its port from the session
document's properties and picks one at random when they lack it: dbgfwd uses the port the plugin
reports ("Port N opened"). The engine's streams are plain TCP connections to that port, made only on
behalf of a client, with no timeout once connected (a rank at a breakpoint sends nothing for hours).
The plugin is stopped with SIGINT, which makes it send the terminate-session flag and remove its mux
socket (SIGTERM skips both), then SIGTERM and SIGKILL if it does not go.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from typing import Callable

from dbgfwd import lifecycle
from dbgfwd.errors import DbgfwdError, ProviderUnavailable, UpstreamError
from dbgfwd.providers.batch.aws import call
from dbgfwd.providers.batch.ssm.session import port_request

log = logging.getLogger("dbgfwd.batch.plugin")
READY_TEXT = "Waiting for connections"
PORT_LINE = re.compile(r"\bPort (\d+) opened\b")
RESPONSE_ENV_PREFIX = "AWS_SSM_START_SESSION_RESPONSE"  # the plugin reads (and unsets) a variable so named
STOP_GRACE = 3.0  # seconds the plugin gets after SIGINT to terminate the session and clean up
PLUGIN_ENV = "DBGFWD_SSM_PLUGIN"  # path of session-manager-plugin (default: found on PATH)


def find_plugin() -> str:
    path = os.environ.get(PLUGIN_ENV) or shutil.which("session-manager-plugin")
    if not path:
        raise ProviderUnavailable("session-manager-plugin is not installed",
                                  hint="install it from the AWS Session Manager docs, or use --ssm-backend native")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PluginSession:
    def __init__(self, clients, route, port: int, *, label: str):
        self.clients, self.route, self.port, self.label = clients, route, port, label
        self.local_port = 0
        self.session_id = ""
        self.proc: subprocess.Popen | None = None
        self._output: list[str] = []
        self._ready = threading.Event()
        self._reported_port: int | None = None
        self._untrack: Callable[[], None] = lambda: None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float) -> "PluginSession":
        plugin = find_plugin()
        self.local_port = _free_port()
        request = port_request(self.route.ssm_target, self.port, self.route.host)
        request["Parameters"]["localPortNumber"] = [str(self.local_port)]
        ssm = self.clients("ssm")
        resp = call(self.clients.ctx, "ssm:StartSession", ssm.start_session, self.route.ssm_target, **request)
        self.session_id = resp["SessionId"]
        session_json = json.dumps({k: resp[k] for k in ("SessionId", "TokenValue", "StreamUrl")})
        env_name = f"{RESPONSE_ENV_PREFIX}_{uuid.uuid4().hex}"
        argv = [plugin, env_name, self.clients.ctx.region, "StartSession", self.clients.ctx.profile or "",
                json.dumps(request), ssm.meta.endpoint_url]
        log.debug("%s: starting session-manager-plugin for session %s", self.label, self.session_id)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True, text=True,
                                     env={**os.environ, env_name: session_json})
        self._untrack = lifecycle.track_child(self.proc)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = " ".join(line for line in self._output[-3:] if "Token" not in line)[:300]
                self.close()
                raise UpstreamError(f"{self.label}: session-manager-plugin did not start the port forward"
                                    f"{': ' + tail if tail else ''}")
        if self._reported_port is None:
            self.close()
            raise UpstreamError(f"{self.label}: session-manager-plugin did not say which port it opened",
                                hint="use --ssm-backend native", retryable=False)
        self.local_port = self._reported_port
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._output.append(line.strip())
            del self._output[:-20]
            port = PORT_LINE.search(line)
            if port and self._reported_port is None:
                self._reported_port = int(port.group(1))
            if READY_TEXT in line:
                self._ready.set()

    def open_stream(self):
        if not self.alive:
            raise UpstreamError(f"{self.label}: session-manager-plugin exited")
        try:
            sock = socket.create_connection(("127.0.0.1", self.local_port), timeout=10)
        except OSError as exc:
            raise UpstreamError(f"{self.label}: cannot reach session-manager-plugin: {exc}") from None
        sock.settimeout(None)  # the timeout bounded connecting; a debugger may be silent for hours
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def keepalive(self) -> None:
        """The plugin keeps its own websocket pinged; nothing to add from here."""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for sig, grace in ((signal.SIGINT, STOP_GRACE), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                    self.proc.wait(grace)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._untrack()
        if self.session_id:
            try:
                call(self.clients.ctx, "ssm:TerminateSession", self.clients("ssm").terminate_session,
                     self.route.ssm_target, SessionId=self.session_id)
            except DbgfwdError:
                pass
            self.session_id = ""
