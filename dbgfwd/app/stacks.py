"""`dbgfwd stacks`: the Python stack of every thread of every rank, taken at nearly the same moment.

Discovery and markers as for `ls`; then, per target and all its ranks in one command through the
provider's exec channel (all targets in parallel), each rank's stack file is emptied, the rank signalled
and the dump read back (dbgfwd.rank.stackdump). Ranks started without dbgfwd-rank have no dump handler:
py-spy is used where the target has it, else the rank's entry says why there is no stack.
"""

from __future__ import annotations

import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from dbgfwd.app.discover import find, open_provider
from dbgfwd.app.options import AttachOptions
from dbgfwd.errors import DbgfwdError, NotFoundError
from dbgfwd.providers.base import Capability, Provider, Target
from dbgfwd.rank.markers import Marker
from dbgfwd.rank.stackdump import DumpRequest, Frame, ThreadStack, parse_command_output, parse_dump, stack_command
from dbgfwd.ui.console import Console

PY_SPY = "py-spy"


@dataclass
class RankStack:
    rank: int
    target: str
    pid: int | None
    threads: list[ThreadStack] = field(default_factory=list)
    main_thread: int | None = None
    error: str | None = None
    source: str = "faulthandler"  # or "py-spy"

    def main(self) -> ThreadStack | None:
        """The program's main thread (the marker names it), else the thread the dump ran on."""
        for t in self.threads:
            if self.main_thread is not None and t.id == self.main_thread:
                return t
        return next((t for t in self.threads if t.current), self.threads[0] if self.threads else None)

    def as_dict(self) -> dict:
        main = self.main()
        return {"rank": self.rank, "target": self.target, "pid": self.pid, "error": self.error,
                "threads": [{"id": t.id, "name": "MainThread" if t is main else None, "main": t is main,
                             "frames": [vars(f) for f in t.frames]} for t in self.threads]}


@dataclass(frozen=True)
class StackGroup:
    ranks: tuple[int, ...]
    frames: tuple[Frame, ...]  # the main thread's frames, innermost first; () for ranks without a stack
    error: str | None = None


def collect(opts: AttachOptions, console: Console, timeout: float) -> tuple[str, list[RankStack]]:
    provider = open_provider(opts)
    name = provider.name
    try:
        found = find(provider, opts, console, probe_all=True)  # every marker: pids and dump handlers
        probes, slots = found.probes, found.slots
        if not slots:
            raise NotFoundError(f"no ranks found: looked {found.where}",
                                hint="start the ranks (dbgfwd-rank), or check the target spec")
        if not provider.has(Capability.EXEC):
            return name, [RankStack(s.rank, t.name, None, error=f"the {name} provider cannot run commands "
                                    "in its targets, so it cannot take stacks") for s, t in slots]
        by_target: dict[str, list[tuple[int, Marker | None]]] = {}
        for slot, target in slots:
            probe = probes.get(target.key)
            marker = next((m for m in getattr(probe, "markers", ())
                           if m.rank == slot.rank and m.port == slot.remote_port), None)
            by_target.setdefault(target.key, []).append((slot.rank, marker))
        keyed = {t.key: t for t in found.targets}
        with console.status(f"taking stacks of {len(slots)} ranks..."):
            with ThreadPoolExecutor(max_workers=min(16, len(by_target))) as pool:
                parts = pool.map(lambda key: _target_stacks(provider, keyed[key], by_target[key], timeout),
                                 by_target)
                stacks = [s for part in parts for s in part]
    finally:
        provider.close()
    return name, sorted(stacks, key=lambda s: s.rank)


def _target_stacks(provider: Provider, target: Target, ranks: list[tuple[int, Marker | None]],
                   timeout: float) -> list[RankStack]:
    out = [RankStack(rank, target.name, m.pid if m else None, main_thread=m.main_thread if m else None)
           for rank, m in ranks]
    if not target.running:
        for s in out:
            s.error = f"{target.name} is {target.status}"
        return out
    with_handler = {m.pid: m for _, m in ranks if m is not None and m.stack_signal and m.stack_file}
    dumpable = [s for s in out if s.pid in with_handler]
    others = [s for s in out if s.pid not in with_handler]
    try:
        if dumpable:
            requests = [DumpRequest(m.pid, m.stack_signal, m.stack_file) for m in with_handler.values()]
            found = parse_command_output(provider.run(target, stack_command(requests, timeout), timeout + 10))
            for s in dumpable:
                _fill_from_dump(s, found.get(s.pid), timeout)
                _absolute(s, with_handler[s.pid].cwd)
        for s in others:
            _fill_with_py_spy(provider, target, s, timeout)
    except DbgfwdError as exc:
        for s in out:
            if not s.threads and s.error is None:
                s.error = exc.message
    return out


def _absolute(stack: RankStack, cwd: str | None) -> None:
    """Relative file names (a script run by a relative path) made absolute with the rank's working directory,
    so that editors and terminals can open file:line."""
    if not cwd:
        return
    for t in stack.threads:
        t.frames = [f if f.file.startswith(("/", "<")) else Frame(posixpath.join(cwd, f.file), f.line, f.function)
                    for f in t.frames]


def _fill_from_dump(stack: RankStack, text: str | None, timeout: float) -> None:
    if text is None:
        stack.error = "no answer from the target"
    elif text.strip() in ("no such process", "no stack file"):
        stack.error = f"{text.strip()} (pid {stack.pid})"
    else:
        stack.threads = parse_dump(text)
        if not stack.threads:
            stack.error = (f"no dump within {timeout:g}s (pid {stack.pid} is busy in a signal-blocking call, or "
                           "the program replaced dbgfwd's handler for the stack signal)")


_PYSPY_THREAD = re.compile(r'^Thread (0x[0-9A-Fa-f]+|\d+) \(([^)]*)\)(?:: "(.*)")?')
_PYSPY_FRAME = re.compile(r"^\s+(.*) \((.*):(\d+)\)$")


def _fill_with_py_spy(provider: Provider, target: Target, stack: RankStack, timeout: float) -> None:
    if stack.pid is None:
        stack.error = "started without dbgfwd-rank (no marker): no pid to take a stack from"
        return
    script = (f"command -v {PY_SPY} >/dev/null 2>&1 || {{ echo 'no py-spy'; exit 0; }}; "
              f"timeout {max(1, int(timeout))} {PY_SPY} dump --pid {int(stack.pid)} 2>&1")
    text = provider.run(target, script, timeout + 10)
    if text.strip() == "no py-spy":
        stack.error = ("started without dbgfwd-rank's stack handler, and py-spy is not installed there "
                       "(pip install py-spy, or start the rank with dbgfwd-rank)")
        return
    stack.source = "py-spy"
    for line in text.splitlines():
        m = _PYSPY_THREAD.match(line)
        if m:
            ident = int(m.group(1), 16) if m.group(1).startswith("0x") else int(m.group(1))
            stack.threads.append(ThreadStack(id=ident, current=m.group(3) == "MainThread"))
            continue
        m = _PYSPY_FRAME.match(line)
        if m and stack.threads:
            stack.threads[-1].frames.append(Frame(m.group(2), int(m.group(3)), m.group(1).strip()))
    if not stack.threads:
        stack.error = f"py-spy could not read pid {stack.pid}: {text.strip()[:200]}"


def group(stacks: list[RankStack]) -> list[StackGroup]:
    """Ranks with the same main-thread stack together; the smallest groups (the odd ones out) first."""
    buckets: dict[tuple, list[int]] = {}
    for s in stacks:
        main = s.main()
        key = (tuple(main.frames) if main else (), s.error if not s.threads else None)
        buckets.setdefault(key, []).append(s.rank)
    groups = [StackGroup(tuple(sorted(r)), frames, error) for (frames, error), r in buckets.items()]
    return sorted(groups, key=lambda g: (len(g.ranks), g.error is not None, g.ranks))
