"""`dbgfwd attach --inject`: make the ranks of a job that is already running debuggable, then attach as usual.

Per target (all targets in parallel), through the provider's exec channel:
1. Stage: a private directory on the target (mode 0700) holding the part of dbgfwd that runs in ranks
   (standard library only). On this machine it links to the installed package; elsewhere it is unpacked
   from a tarball sent on the command's standard input.
2. Scan: the agent (`dbgfwd.rank.inject`) lists the job's rank processes and, for each, whether it can be
   injected and whether its interpreter has debugpy.
3. Inject: when a rank's interpreter lacks debugpy, dbgfwd's own copy is sent into the same directory
   (only to a target of the same OS and CPU as this machine); then the agent injects every rank.
4. The directory is removed by the target itself once the last injected rank has exited.
The ranks then have markers like ranks started under dbgfwd-rank, and attach finds them as it always does.
"""

from __future__ import annotations

import io
import json
import logging
import os
import platform
import shlex
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dbgfwd.app.discover import open_provider
from dbgfwd.app.options import AttachOptions, provider_config
from dbgfwd.errors import DbgfwdError, NotFoundError, UsageError
from dbgfwd.providers.base import Capability, Provider, Target
from dbgfwd.rank.inject import parse_report
from dbgfwd.ui.console import Console

log = logging.getLogger("dbgfwd.inject")

# What of dbgfwd runs inside a rank (dbgfwd.rank and what it imports): standard library only.
RANK_MODULES = ("__init__.py", "envvars.py", "errors.py", "fsutil.py", "platform.py", "rank")
SKIP_SUFFIXES = (".pyc", ".pyo", ".dll", ".exe", ".pdb", ".dylib", ".lib")
AGENT_TIMEOUT = 30.0  # seconds each rank may take to be injected (gdb, then debugpy starting in the rank)


@dataclass
class TargetResult:
    target: str
    ranks: list[dict] = field(default_factory=list)
    others: list[dict] = field(default_factory=list)
    error: str | None = None
    took: float = 0.0

    def as_dict(self) -> dict:
        return {"target": self.target, "error": self.error, "took": self.took, "ranks": self.ranks,
                "others": self.others}


@dataclass
class InjectOptions:
    match: str | None = None
    dry_run: bool = False  # scan only: what would be injected
    collective_timeout: str | None = None
    timeout: float = AGENT_TIMEOUT


def check(opts: InjectOptions, attach: AttachOptions | None = None) -> None:
    """Everything about --inject that can be said before anything is contacted."""
    import re

    if attach is not None:
        from dbgfwd import providers

        cls = providers.choose(attach.provider, provider_config(attach))
        if Capability.EXEC not in cls.capabilities:
            raise UsageError(f"--inject needs to run commands where the ranks run, which the {cls.name} "
                             "provider cannot", hint="use it with the local, ssh or kubernetes provider")
    if opts.match is not None:
        try:
            re.compile(opts.match)
        except re.error as exc:
            raise UsageError(f"--match {opts.match!r} is not a regular expression ({exc})",
                             hint="give a word of the ranks' command line, e.g. --match train.py") from None
    if opts.collective_timeout is not None:
        from dbgfwd.rank.collectives import parse_timeout

        try:
            parse_timeout(opts.collective_timeout)
        except ValueError as exc:
            raise UsageError(f"--collective-timeout: {exc}") from None


def run_inject(opts: AttachOptions, inject: InjectOptions, console: Console) -> list[TargetResult]:
    """Inject into every running target's ranks; the per-target results. Raises when nothing could be done."""
    check(inject, opts)
    provider = open_provider(opts)
    try:
        with console.status(f"discovering ({provider.name})..."):
            discovery = provider.exec_targets()
        running = list(discovery.targets)
        if not running:
            raise NotFoundError(f"no running target to inject into: looked {discovery.where}",
                                hint="wait until the job runs, or check the target spec")
        verb = "looking for ranks" if inject.dry_run else "injecting debugpy into ranks"
        with console.status(f"{verb} on {len(running)} target(s)..."):
            with ThreadPoolExecutor(max_workers=min(16, len(running))) as pool:
                results = list(pool.map(lambda t: _one_target(provider, t, opts, inject), running))
    finally:
        provider.close()
    return results


def _one_target(provider: Provider, target: Target, opts: AttachOptions, inject: InjectOptions) -> TargetResult:
    began = time.monotonic()
    out = TargetResult(target.name)
    try:
        # Ranks on this machine need nothing sent: the installed packages are linked, not copied.
        stager = LocalStager() if provider.has(Capability.SHARES_LOCAL_PORTS) else RemoteStager(provider, target)
        report = stager.run(opts, inject)
        if "error" in report and "ranks" not in report:
            out.error = f"the injector failed on {target.name}: {report['error']}"
        else:
            out.ranks, out.others = report.get("ranks", []), report.get("others", [])
            for r in out.ranks:
                r["target"] = target.name
    except DbgfwdError as exc:
        out.error = exc.message
    out.took = round(time.monotonic() - began, 2)
    return out


def _request(opts: AttachOptions, inject: InjectOptions, mode: str, bundle: str | None, debugpy_dir: str | None,
             cleanup: bool) -> dict:
    runtime = opts.provider_options.get("runtime_dir")  # the local provider's --runtime-dir: markers go there
    return {"mode": mode, "base_port": opts.base_port, "match": inject.match, "bundle": bundle,
            "runtime_dir": str(runtime) if runtime else None,
            "debugpy_dir": debugpy_dir, "collective_timeout": inject.collective_timeout,
            "timeout": inject.timeout, "cleanup": cleanup}


def _agent_budget(inject: InjectOptions) -> float:
    return inject.timeout + 60.0  # the scan, then every rank in parallel batches, each bounded by the agent


class LocalStager:
    """This machine: the bundle links to the installed dbgfwd (and debugpy); the agent runs with this Python."""

    def run(self, opts: AttachOptions, inject: InjectOptions) -> dict:
        from dbgfwd.rank import inject as agent

        bundle = tempfile.mkdtemp(prefix="dbgfwd-inject.")
        os.symlink(_package_dir(), os.path.join(bundle, "dbgfwd"))
        debugpy_dir = None
        found = _debugpy_dir()
        if found is not None:
            os.mkdir(os.path.join(bundle, "lib"), 0o700)
            os.symlink(found, os.path.join(bundle, "lib", "debugpy"))
            debugpy_dir = os.path.join(bundle, "lib")
        request = _request(opts, inject, "scan" if inject.dry_run else "inject", bundle, debugpy_dir, True)
        # In a thread of this process, not a child: nothing to stage, and Ctrl-C is served by lifecycle.
        return agent.run(request)


class RemoteStager:
    """Another machine or a pod: everything travels through the provider's exec channel."""

    def __init__(self, provider: Provider, target: Target):
        self.provider = provider
        self.target = target

    def _exec(self, script: str, payload: bytes, budget: float) -> dict:
        text = self.provider.run(self.target, script, budget, stdin=payload)
        report = parse_report(text)
        if report is None:
            last = (text.strip().splitlines() or ["no output"])[-1]
            raise DbgfwdError(f"{self.target.name}: the injector gave no report ({last[:200]})")
        return report

    def run(self, opts: AttachOptions, inject: InjectOptions) -> dict:
        rank_part = rank_bundle()
        # 1: stage dbgfwd's rank part and scan (nothing is done to any process yet)
        scan = self._exec(_stage_script(len(rank_part), _request(opts, inject, "scan", None, None, inject.dry_run)),
                          rank_part, _agent_budget(inject))
        if inject.dry_run or "bundle" not in scan:
            return scan
        bundle = scan["bundle"]
        todo = [r for r in scan.get("ranks", []) if r.get("state") == "injectable"]
        if not todo:
            self._exec(_in_bundle(bundle, 0, _request(opts, inject, "scan", bundle, None, True)), b"", 60)
            return scan
        payload, debugpy_dir = b"", None
        if any(r.get("needs_debugpy") for r in todo):
            mismatch = _platform_mismatch(scan)
            if mismatch:
                for r in todo:
                    if r.get("needs_debugpy"):
                        r["state"], r["reason"] = "failed", (
                            f"debugpy is not installed for {r.get('exe') or 'its Python'} and dbgfwd's own copy is "
                            f"for {mismatch}: pip install debugpy in the ranks' environment")
                if all(r.get("needs_debugpy") for r in todo):
                    self._exec(_in_bundle(bundle, 0, _request(opts, inject, "scan", bundle, None, True)), b"", 60)
                    return scan
            else:
                payload, debugpy_dir = debugpy_bundle(), f"{bundle}/lib"
        # 2: (debugpy if needed, then) inject
        return self._exec(_in_bundle(bundle, len(payload),
                                     _request(opts, inject, "inject", bundle, debugpy_dir, True)),
                          payload, _agent_budget(inject))


def _platform_mismatch(report: dict) -> str | None:
    here = (platform.system(), platform.machine())
    there = (report.get("system"), report.get("machine"))
    return None if there == here else f"{here[0]} {here[1]} (the target is {there[0]} {there[1]})"


# The target's shell side. A Python is needed there anyway (the ranks are Python): the first python3 on PATH,
# else the interpreter of one of this user's Python processes.
_FIND_PYTHON = (
    'PY=$(command -v python3 || command -v python); '
    'if [ -z "$PY" ]; then for e in /proc/[0-9]*/exe; do t=$(readlink "$e" 2>/dev/null) || continue; '
    'case "${t##*/}" in python|python3|python3.*) PY=$t; break;; esac; done; fi; '
    '[ -n "$PY" ] || { echo "dbgfwd: no Python found on the target"; exit 0; }; '
)
# Reads exactly N bytes of standard input (an exec channel may never close it) and unpacks them here.
_UNPACK = ('import io, sys, tarfile; n = int(sys.argv[1]); data = sys.stdin.buffer.read(n) if n else b""; '
           'assert len(data) == n, "short input"; '
           't = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") if n else None; '
           't and (t.extractall(".", filter="data") if hasattr(tarfile, "data_filter") else t.extractall("."))')


def _stage_script(size: int, request: dict) -> str:
    return (_FIND_PYTHON + 'umask 077; d=$(mktemp -d "${TMPDIR:-/tmp}/dbgfwd-inject.XXXXXX") || exit 1; '
            f'cd "$d" && "$PY" -c {shlex.quote(_UNPACK)} {size} && '
            f'"$PY" -m dbgfwd.rank.inject {shlex.quote(json.dumps(request))}')


def _in_bundle(bundle: str, size: int, request: dict) -> str:
    b = shlex.quote(bundle)
    return (_FIND_PYTHON + f'[ -d {b} ] && [ -O {b} ] && [ ! -L {b} ] || {{ echo "dbgfwd: {bundle} is gone"; exit 0; }}; '
            f'cd {b} && "$PY" -c {shlex.quote(_UNPACK)} {size} && '
            f'"$PY" -m dbgfwd.rank.inject {shlex.quote(json.dumps(request))}')


# ---- what is sent ----

def _package_dir() -> str:
    import dbgfwd

    return os.path.dirname(os.path.abspath(dbgfwd.__file__))


def _debugpy_dir() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("debugpy")
    if spec is None or not spec.origin:
        return None
    return os.path.dirname(os.path.abspath(spec.origin))


_cache: dict[str, bytes] = {}
_cache_lock = threading.Lock()


def _tarball(entries: list[tuple[str, str]]) -> bytes:
    """A gzipped tar of (source path, name in the archive) trees, without caches or Windows/macOS binaries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for source, name in entries:
            tar.add(source, arcname=name, filter=_keep)
    return buf.getvalue()


def _keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    base = os.path.basename(info.name)
    if base == "__pycache__" or base.endswith(SKIP_SUFFIXES) or not (info.isfile() or info.isdir()):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o700 if info.isdir() else 0o600
    return info


def rank_bundle() -> bytes:
    """dbgfwd's in-rank part, as `dbgfwd/...` in a tarball (a few tens of KB)."""
    with _cache_lock:
        if "rank" not in _cache:
            root = _package_dir()
            _cache["rank"] = _tarball([(os.path.join(root, name), f"dbgfwd/{name}") for name in RANK_MODULES])
        return _cache["rank"]


def debugpy_bundle() -> bytes:
    """This machine's debugpy, as `lib/debugpy/...` in a tarball (a few MB; built once per run)."""
    with _cache_lock:
        if "debugpy" not in _cache:
            found = _debugpy_dir()
            if found is None:
                raise DbgfwdError("debugpy is not installed here, so dbgfwd cannot bring it to the ranks",
                                  hint="pip install debugpy (here, or in the ranks' environment)")
            _cache["debugpy"] = _tarball([(found, "lib/debugpy")])
        return _cache["debugpy"]


# ---- reporting ----

def summary(results: list[TargetResult]) -> tuple[int, int, int]:
    """(ranks debuggable now, ranks that failed or were skipped, ranks still pending)."""
    ok = bad = pending = 0
    for res in results:
        for r in res.ranks:
            if r["state"] in ("injected", "ready"):
                ok += 1
            elif r["state"] == "pending":
                pending += 1
            elif r["state"] != "injectable":
                bad += 1
    return ok, bad, pending


def require_some(results: list[TargetResult], dry_run: bool) -> None:
    """NotFoundError when no rank was found at all (naming why on each target); the rest is reported."""
    found = sum(len(r.ranks) for r in results)
    if found:
        return
    reasons = [r.error for r in results if r.error] + \
        [f"{o['pid']}: {o['reason']}" for r in results for o in r.others][:3]
    detail = f" ({'; '.join(reasons)})" if reasons else ""
    raise NotFoundError(f"no rank processes found on {len(results)} target(s){detail}",
                        hint="ranks are Python processes of yours with RANK/LOCAL_RANK (or OMPI_*, PMI_*, "
                             "SLURM_PROCID) in their environment; --match PATTERN picks them by command line")


def results_path(workspace: Path) -> Path:
    return workspace / ".dbgfwd" / "inject.json"


def save(workspace: Path, results: list[TargetResult]) -> None:
    from dbgfwd.fsutil import atomic_write_text

    path = results_path(workspace)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    atomic_write_text(path, json.dumps([r.as_dict() for r in results], indent=1) + "\n", mode=0o600)

