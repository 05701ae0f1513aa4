"""AWS Batch provider: ranks of Batch jobs (single, array, multi-node parallel) through SSM.

Discovery (`discovery.py`) maps each running job/node to an SSM target: the ECS Exec target of its
task, or the EC2 instance of its container instance (awsvpc nodes through the instance to the
node's private IP). Streams go through native SSM port sessions (`ssm/`), one session per
(target, remote port) and one smux stream per local connection; `--ssm-backend plugin` uses
session-manager-plugin instead (`plugin.py`).

Readiness is not probed: a port session cannot run commands, and connecting to the debug port
to test it is forbidden. A rank counts as reachable once a client's stream opens.
"""

from __future__ import annotations

import importlib.util
import logging
import threading

from dbgfwd.errors import AuthError, DbgfwdError, UpstreamError, UsageError
from dbgfwd.providers.base import Availability, Capability, Discovery, Provider, ProviderConfig, Stream, Target
from dbgfwd.providers.batch.options import OPTIONS, TITLE

log = logging.getLogger("dbgfwd.batch")

BACKENDS = ("native", "plugin")


class BatchProvider(Provider):
    name = "batch"
    title = TITLE
    summary = "ranks of AWS Batch jobs (single, array, multi-node parallel) through SSM Session Manager"
    capabilities = frozenset({Capability.REDISCOVERY})
    keepalive_interval = 60.0
    options = OPTIONS

    def __init__(self, config: ProviderConfig):
        super().__init__(config)
        backend = config.opt("ssm_backend", "native")
        if backend not in BACKENDS:
            raise UsageError(f"unknown --ssm-backend {backend!r}", hint="use native or plugin")
        if backend == "plugin":
            from dbgfwd.providers.batch.plugin import find_plugin
            find_plugin()  # fails now, with the install hint, rather than at the first connection
        if config.opt("job_name") and not config.opt("queue"):
            raise UsageError("--job-name needs --queue", hint="add --queue QUEUE")
        from dbgfwd.providers.batch.discovery import check_specs
        check_specs(tuple(config.targets), config.opt("queue"))
        self.backend = backend
        self._clients = None
        self._discovery = None
        self._sessions: dict[tuple, object] = {}
        self._starting: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def availability(cls) -> Availability:
        if importlib.util.find_spec("boto3") is None:
            return Availability(False, "boto3 is not installed: pip install boto3")
        return Availability(True)

    @classmethod
    def claims(cls, config: ProviderConfig) -> bool:
        from dbgfwd.providers.batch.discovery import looks_like_job_id
        return super().claims(config) or (bool(config.targets) and all(map(looks_like_job_id, config.targets)))

    # ---- discovery ----
    @property
    def clients(self):
        if self._clients is None:
            from dbgfwd.providers.batch.aws import Clients
            self._clients = Clients(self.config.opt("profile"), self.config.opt("region"))
        return self._clients

    def discover(self) -> Discovery:
        if self._discovery is None:
            from dbgfwd.providers import REGISTRY
            from dbgfwd.providers.batch.discovery import BatchDiscovery
            self._discovery = BatchDiscovery(self.clients, tuple(self.config.targets), self.config.opt("queue"),
                                             self.config.opt("job_name"), self.config.ranks_per_node,
                                             kubernetes_available="kubernetes" in REGISTRY)
        return self._discovery.discover()

    # ---- streams ----
    def open_stream(self, target: Target, port: int, timeout: float) -> Stream:
        route = target.handle
        if route is None:
            raise UpstreamError(f"{target.name}: job is {target.status}, not running yet")
        if route.problem:
            raise UpstreamError(f"{target.name}: {route.problem}", hint=route.hint or None,
                                retryable=route.retryable)
        key = (route.ssm_target, route.host, port)
        with self._lock:
            if self._closed:
                raise UpstreamError("dbgfwd is shutting down", retryable=False)
            gate = self._starting.setdefault(key, threading.Lock())
        with gate:  # one StartSession per key even when several clients connect at once
            session = self._sessions.get(key)
            if session is None or not session.alive:
                if session is not None:
                    session.close()
                session = self._start(target, route, port, timeout)
                with self._lock:
                    self._sessions[key] = session
        return session.open_stream()

    def _start(self, target: Target, route, port: int, timeout: float):
        label = f"{target.name}:{port}"
        try:
            if self.backend == "plugin":
                from dbgfwd.providers.batch.plugin import PluginSession
                return PluginSession(self.clients, route, port, label=label).start(timeout)
            from dbgfwd.providers.batch.ssm.session import PortSession, port_request
            session = PortSession(self.clients("ssm"), self.clients.ctx,
                                  port_request(route.ssm_target, port, route.host), label=label,
                                  keepalive_interval=self.keepalive_interval)
            return session.start(timeout)
        except UpstreamError:
            raise
        except AuthError as exc:
            raise UpstreamError(exc.message, hint=exc.hint, retryable=False, code=exc.code) from None
        except UsageError as exc:
            raise UpstreamError(exc.message, hint=exc.hint, retryable=False, code=exc.code) from None
        except DbgfwdError as exc:
            raise UpstreamError(exc.message, hint=exc.hint, retryable=True, code=exc.code) from None

    def keepalive(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            session.keepalive()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            try:
                session.close()
            except Exception as exc:  # closing must reach every session
                log.debug("closing %s: %s", getattr(session, "label", "?"), exc)
