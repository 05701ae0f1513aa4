"""The job session: one debug session in VS Code for the whole job, every rank a child session of it.

`dbgfwd attach` serves a small DAP endpoint on 127.0.0.1 (launch.json's "dbgfwd: job" connects to it). It
answers the handshake itself and has no threads of its own; for each rank that is ready it sends the custom
event `debugpyAttach`, whose body is that rank's attach configuration: VS Code's Python debugger extension
then starts a child debug session with it, parented to and managed by the job session (the extension's
childProcessAttachHandler/childProcessAttachService, the contract debugpy itself uses for subprocesses).

Per connected job session, each rank is announced:
- once it is ready and no debugger is connected to it (never a second debugger beside a live one);
- again when another process is seen behind it (a restarted rank, a replaced pod: the engine's
  `generation`) and its previous child session has ended;
- only if it is among the auto-attached ranks (`--job-ranks`), or when asked for by `dbgfwd attach-rank`
  (the custom request `dbgfwd.attachRanks` on the same endpoint).
A one-line status per rank goes to the Debug Console as DAP `output` events. The job session never
connects to a rank: readiness is the engine's, read out of band.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dbgfwd import platform
from dbgfwd.engine import RankState, RankStatus
from dbgfwd.net.dapframes import frame
from dbgfwd.net.listeners import bind_listener

log = logging.getLogger("dbgfwd.job")

ATTACH_RANKS = "dbgfwd.attachRanks"  # the custom request `dbgfwd attach-rank` sends
EVENT = "debugpyAttach"
POLL = 0.2  # seconds between looks at the engine's ranks
MAX_MESSAGE = 16 * 1024 * 1024


@dataclass
class _Announced:
    generation: int
    at: float


@dataclass
class _Client:
    sock: socket.socket
    peer: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    seq: int = 0
    attached: bool = False  # an editor's job session (it sent attach), not a one-shot control client
    configured: bool = False  # configurationDone seen: children may be announced
    announced: dict = field(default_factory=dict)  # rank -> _Announced
    requested: set = field(default_factory=set)  # ranks asked for by `attach-rank`
    closed: bool = False

    def send(self, msg: dict) -> None:
        with self.lock:
            if self.closed:
                return
            self.seq += 1
            msg["seq"] = self.seq
            try:
                self.sock.sendall(frame(json.dumps(msg).encode()))
            except OSError:
                self.closed = True

    def event(self, name: str, body: dict | None = None) -> None:
        self.send({"type": "event", "event": name, **({"body": body} if body is not None else {})})

    def respond(self, request: dict, body: dict | None = None, error: str | None = None) -> None:
        msg = {"type": "response", "request_seq": request.get("seq", 0), "command": request.get("command", ""),
               "success": error is None}
        if error is not None:
            msg["message"] = error
        if body is not None:
            msg["body"] = body
        self.send(msg)

    def say(self, text: str) -> None:
        self.event("output", {"category": "console", "output": text + "\n"})


class JobSession:
    """Serves the job session on `host:port` for `engine`'s ranks. `config_for(status)` is a rank's attach
    configuration (as in launch.json, variables resolved)."""

    def __init__(self, engine, config_for: Callable[[RankStatus], dict], port: int, host: str = "127.0.0.1",
                 auto: frozenset[int] | None = None, allowed_uids: frozenset[int] = frozenset()):
        self.engine = engine
        self.config_for = config_for
        self.host = host
        self.auto = auto  # None: every rank; else only these (the others on request)
        self.allowed_uids = allowed_uids
        self._listener = _bind(host, port)
        self.port = self._listener.getsockname()[1]
        self._clients: list[_Client] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._down_since: dict[int, float] = {}  # rank -> when it was last seen leaving ready (for the console)
        # One announcer at a time: the poll loop, configurationDone and attach-rank all announce, and two of
        # them deciding at once that a rank is new would send it twice (two child sessions for one rank).
        self._announce_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle ----
    def start(self) -> None:
        for target, name in ((self._accept_loop, "dbgfwd-job-accept"), (self._announce_loop, "dbgfwd-job")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            clients = list(self._clients)
        for c in clients:
            _close(c)
        for t in self._threads:
            t.join(timeout=2)

    @property
    def clients(self) -> int:
        with self._lock:
            return sum(1 for c in self._clients if c.attached and not c.closed)

    # ---- accepting ----
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, addr = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.1)
                continue
            uid = platform.peer_uid(sock)
            if uid is not None and uid != os.getuid() and uid not in self.allowed_uids:
                log.warning("job session: closed a connection from uid %s, not from you", uid)
                sock.close()
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Client(sock, f"{addr[0]}:{addr[1]}")
            with self._lock:
                self._clients.append(client)
            threading.Thread(target=self._serve, args=(client,), name="dbgfwd-job-client", daemon=True).start()

    def _serve(self, client: _Client) -> None:
        try:
            for msg in _messages(client.sock):
                if msg.get("type") == "request":
                    self._handle(client, msg)
                if client.closed:
                    break
        except (OSError, ValueError) as exc:
            log.debug("job session client %s: %s", client.peer, exc)
        finally:
            _close(client)
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)

    # ---- DAP ----
    def _handle(self, client: _Client, req: dict) -> None:
        command = req.get("command")
        args = req.get("arguments") or {}
        if command == "initialize":
            client.respond(req, {"supportsConfigurationDoneRequest": True, "supportsTerminateRequest": True})
        elif command == "attach":
            client.attached = True
            client.respond(req)
            client.event("initialized")
        elif command == "launch":
            client.respond(req, error="the dbgfwd job session only attaches (use \"request\": \"attach\")")
        elif command == "setBreakpoints":
            # Breakpoints bind in each rank's child session; the job session itself runs no code.
            n = len(args.get("breakpoints") or args.get("lines") or ())
            client.respond(req, {"breakpoints": [{"verified": False, "message": "bound in each rank's session"}
                                                 for _ in range(n)]})
        elif command in ("setExceptionBreakpoints", "setFunctionBreakpoints", "setDataBreakpoints",
                         "setInstructionBreakpoints"):
            client.respond(req, {"breakpoints": []})
        elif command == "configurationDone":
            client.respond(req)
            client.configured = True
            ranks = self.engine.snapshot()
            client.say(f"dbgfwd: job session for {len(ranks)} rank(s); each rank appears as a child session "
                       "when it is ready" + ("" if self.auto is None else
                                             f" (auto: ranks {_fmt(self.auto)}; others: dbgfwd attach-rank N)"))
            self._announce(client, {r.planned.rank: r for r in ranks})
        elif command == "threads":
            client.respond(req, {"threads": []})
        elif command in ("pause", "continue", "next", "stepIn", "stepOut"):
            client.respond(req, {"allThreadsContinued": True} if command == "continue" else None)
        elif command in ("disconnect", "terminate"):
            client.respond(req)
            if command == "terminate":
                client.event("terminated")
            _close(client)
        elif command == ATTACH_RANKS:
            self._attach_ranks(client, req, args)
        else:
            client.respond(req, error=f"the dbgfwd job session does not do {command!r}; use a rank's session")

    def _attach_ranks(self, control: _Client, req: dict, args: dict) -> None:
        wanted = {int(r) for r in args.get("ranks") or ()}
        known = {r.planned.rank: r for r in self.engine.snapshot()}
        unknown = sorted(wanted - set(known))
        if unknown:
            control.respond(req, error=f"no rank {_fmt(unknown)} in this session (it has {_fmt(sorted(known))})")
            return
        with self._lock:
            editors = [c for c in self._clients if c.attached and c.configured and not c.closed]
        if not editors:
            control.respond(req, error="no editor is connected to the job session: start \"dbgfwd: job\" in VS Code")
            return
        with self._announce_lock:
            for c in editors:
                c.requested |= wanted
                for rank in wanted:  # asked again: announce again even for the same process, unless connected
                    c.announced.pop(rank, None)
        announced = []
        for c in editors:
            announced += self._announce(c, known)
        states = {r: known[r].state.value for r in sorted(wanted)}
        control.respond(req, {"announced": sorted(set(announced)), "states": states, "editors": len(editors)})

    # ---- announcing ----
    def _announce_loop(self) -> None:
        seen = None
        while not self._stop.wait(POLL):
            version = getattr(self.engine, "version", None)
            if version is not None and version == seen:
                continue  # no rank changed state since the last look (a snapshot of 1024 ranks, 5 times a second)
            try:
                ranks = {r.planned.rank: r for r in self.engine.snapshot()}
            except Exception as exc:  # never let a bad snapshot end the job session
                log.debug("job session: %s", exc)
                continue
            now = time.monotonic()
            for rank, st in ranks.items():
                if st.state not in (RankState.READY, RankState.CONNECTED):
                    self._down_since.setdefault(rank, now)
            with self._lock:
                editors = [c for c in self._clients if c.configured and not c.closed]
            for c in editors:
                self._announce(c, ranks)
            for rank, st in ranks.items():
                if st.state in (RankState.READY, RankState.CONNECTED):
                    self._down_since.pop(rank, None)
            seen = version

    def _announce(self, client: _Client, ranks: dict[int, RankStatus]) -> list[int]:
        with self._announce_lock:
            return self._announce_locked(client, ranks)

    def _announce_locked(self, client: _Client, ranks: dict[int, RankStatus]) -> list[int]:
        out = []
        for rank in sorted(ranks):
            st = ranks[rank]
            if self.auto is not None and rank not in self.auto and rank not in client.requested:
                continue
            if st.state != RankState.READY:  # not up, or a debugger is already connected to it
                continue
            before = client.announced.get(rank)
            if before is not None and before.generation == st.generation:
                continue  # this very process was announced already; its session ended: the user's choice
            client.event(EVENT, self.config_for(st))
            client.announced[rank] = _Announced(st.generation, time.monotonic())
            out.append(rank)
            down = self._down_since.get(rank)
            if before is None:
                client.say(f"dbgfwd: rank {rank} ({st.target_name}) attached")
            else:
                took = f", {time.monotonic() - down:.1f} s after it went away" if down is not None else ""
                client.say(f"dbgfwd: rank {rank} ({st.target_name}) re-attached: a new process{took}")
        return out


def _bind(host: str, port: int) -> socket.socket:
    sock = bind_listener(host, port, backlog=16)
    sock.settimeout(0.5)  # blocking accept() that wakes to notice a stop
    return sock


def _close(client: _Client) -> None:
    with client.lock:
        client.closed = True
    try:
        client.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        client.sock.close()
    except OSError:
        pass


def _messages(sock: socket.socket):
    """DAP messages read from `sock` until it closes. ValueError on bytes that are not DAP."""
    buf = bytearray()
    while True:
        end = buf.find(b"\r\n\r\n")
        while end < 0:
            if len(buf) > 4096:
                raise ValueError("not a DAP header")
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
            end = buf.find(b"\r\n\r\n")
        length = None
        for line in bytes(buf[:end]).split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length is None or not 0 <= length <= MAX_MESSAGE:
            raise ValueError("no usable Content-Length")
        del buf[:end + 4]
        while len(buf) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
        body, buf = bytes(buf[:length]), buf[length:]
        msg = json.loads(body)
        if isinstance(msg, dict):
            yield msg


def _fmt(ranks) -> str:
    from dbgfwd.plan.ranksets import format_ranks

    return format_ranks(sorted(ranks))


def choose_port(remembered: int | None, local_base: int, taken: set[int]) -> int:
    """The job session's local port: the one remembered for this workspace when free, else the one just below
    the ranks' local ports, else any free port (0)."""
    from dbgfwd.plan.ports import port_is_free

    for port in (remembered, local_base - 1):
        if port and 0 < port < 65536 and port not in taken and port_is_free(port):
            return port
    return 0


def resolve_workspace(config: dict, workspace: Path) -> dict:
    """`${workspaceFolder}` in a rank's config made absolute (a child session is started outside launch.json),
    and the folder named so the extension picks it."""
    text = json.dumps(config).replace("${workspaceFolder}", str(workspace).replace("\\", "\\\\"))
    out = json.loads(text)
    out["workspaceFolder"] = str(workspace)
    return out


def request_ranks(port: int, ranks: list[int], timeout: float = 10.0) -> dict:
    """`dbgfwd attach-rank`: ask the running attach's job session to announce `ranks` to the editor. The response
    body; DbgfwdError when the session says no or cannot be reached."""
    from dbgfwd.errors import NoSessionError, NotFoundError, UnreachableError

    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError as exc:
        raise UnreachableError(f"cannot reach the job session on 127.0.0.1:{port} ({exc.strerror or exc})",
                               hint="is `dbgfwd attach` still running in this workspace?") from None
    try:
        sock.sendall(frame(json.dumps({"seq": 1, "type": "request", "command": ATTACH_RANKS,
                                       "arguments": {"ranks": ranks}}).encode()))
        for msg in _messages(sock):
            if msg.get("type") == "response" and msg.get("request_seq") == 1:
                if msg.get("success"):
                    return msg.get("body") or {}
                text = str(msg.get("message") or "refused")
                if text.startswith("no rank"):
                    raise NotFoundError(text, hint="`dbgfwd status` lists the session's ranks")
                raise NoSessionError(text, hint="open the Run and Debug view and start \"dbgfwd: job\"")
        raise UnreachableError("the job session closed the connection without answering")
    except socket.timeout:
        raise UnreachableError(f"the job session did not answer within {timeout:g}s") from None
    finally:
        sock.close()
