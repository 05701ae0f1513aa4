"""What runs inside a live rank when `dbgfwd attach --inject` reaches it: dbgfwd-rank's work, after the fact.

The injector (`dbgfwd.rank.inject`) makes the rank's main thread call `start(config)` at a point where
running Python is safe. `start` then does, in the running process, what dbgfwd-rank does before a
program starts: debugpy listens on 127.0.0.1 at base port + local rank (with ~1 ms requests,
dbgfwd.rank.nodelay), the timeouts of torch process groups that already exist are raised
(dbgfwd.rank.collectives), the stack-dump handler for `dbgfwd stacks` is installed, and the readiness
marker is written on the rank's behalf. What was applied, or why not, goes to a result file for the
injector; nothing is printed into the job's output.

It must never harm the job: every step is guarded, a failure is reported and the program runs on, and
the program's own signal handlers are left alone (the marker is removed at exit; a marker whose process
is gone is ignored by every reader anyway).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path

_DONE = "_dbgfwd_injected"  # attribute on sys: set once per process, so a second delivery does nothing


def bootstrap(bundle: str, config: dict) -> str:
    """The one line of Python the injector has the rank run: it binds no name in the program's `__main__`,
    imports dbgfwd from `bundle` (then takes `bundle` off sys.path again) and calls `start`."""
    body = (
        "import sys\n"
        f"if not getattr(sys, {_DONE!r}, False):\n"
        f"    setattr(sys, {_DONE!r}, True)\n"
        "    try:\n"
        f"        open({config['started']!r}, 'w').close()\n"
        f"        sys.path.insert(0, {bundle!r})\n"
        "        try:\n"
        "            from dbgfwd.rank import injected\n"
        "        finally:\n"
        f"            sys.path.remove({bundle!r})\n"
        f"        injected.start({json.dumps(config)!r})\n"
        "    except BaseException as exc:\n"
        "        try:\n"
        f"            open({config['result']!r}, 'w').write(repr(exc))\n"
        "        except BaseException:\n"
        "            pass\n"
    )
    # One statement that binds nothing in __main__ and cannot raise for lack of a name.
    return f"exec({body!r}, {{}})\n"


def start(config_json: str) -> None:
    config = json.loads(config_json)
    result: dict = {"pid": os.getpid(), "ok": False, "applied": [], "warnings": [], "error": None,
                    "took": None}
    began = time.monotonic()
    try:
        _start(config, result)
        result["ok"] = True
    except Exception as exc:  # reported to the injector; the program runs on
        result["error"] = result.get("error") or f"{type(exc).__name__}: {exc}"
    result["took"] = round(time.monotonic() - began, 3)
    _write_result(config["result"], result)


def _start(config: dict, result: dict) -> None:
    from dbgfwd.rank import collectives, debuggee, markers, stackdump
    from dbgfwd.rank import env as rankenv

    applied, warnings = result["applied"], result["warnings"]
    env = rankenv.detect()
    if env is None:
        raise RuntimeError("no rank environment (RANK, OMPI_COMM_WORLD_RANK, SLURM_PROCID, ...) in this process")
    port = int(config["base_port"]) + env.local_rank
    host = "127.0.0.1"
    runtime = markers.ensure_runtime_dir(Path(config.get("runtime_dir") or markers.runtime_dir()))

    # pydevd's "frozen modules" notice would go to the job's stderr; say it here instead (dbgfwd-rank restarts
    # the interpreter with -X frozen_modules=off, which a running process cannot do).
    code = getattr(os.path.realpath, "__code__", None)
    if code is not None and code.co_filename.startswith("<frozen"):
        os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        warnings.append("frozen modules: breakpoints inside frozen standard-library modules may not bind")
    _import_debugpy(config.get("debugpy_dir"), applied)
    said: list[str] = []
    try:
        nodelay = debuggee.listen(host, port, log=said.append)
    except debuggee.ListenError as exc:
        raise RuntimeError(f"debugpy cannot listen on {host}:{port} ({exc})") from None
    if nodelay:
        applied.append("TCP_NODELAY")
    else:
        warnings.append("TCP_NODELAY not set (debugpy's internals changed?): requests take ~40 ms")

    timeout = collectives.parse_timeout(config.get("collective_timeout") or collectives.DEFAULT)
    if timeout is not None:
        try:
            guard = collectives.Guard(timeout, say=warnings.append, log=lambda msg: None,
                                      keep_hint="--collective-timeout keep leaves the program's own")
            guard.install()
            limit = collectives.format_timeout(timeout)
            if guard.raised:
                was = guard.raised[0].rsplit(": ", 1)[-1].split(" -> ")[0]
                applied.append(f"collective timeout {was} -> {limit} ({len(guard.raised)} group(s))")
            elif collectives.C10D in sys.modules:
                applied.append(f"collective timeouts already >= {limit}")
            else:
                applied.append(f"collective timeouts -> {limit} for groups made later")
        except Exception as exc:
            warnings.append(f"collective timeout guard not installed: {exc!r}")

    stack = None
    try:
        stack = stackdump.install(runtime)
    except Exception as exc:
        warnings.append(f"stack handler not installed: {exc!r}")
    if stack is not None:
        applied.append("stack handler")
    else:
        warnings.append("no stack handler (the signal could not be registered)")

    argv = [a for a in sys.argv] or ["python"]
    marker = markers.new_marker(env.rank, env.local_rank, port, host, env.world_size, env.source, argv,
                                stack=stack)
    path = markers.write_marker(marker, runtime)
    paths = [path] + ([stack.path] if stack else [])
    atexit.register(_remove, paths)
    result.update(rank=env.rank, local_rank=env.local_rank, port=port, files=[str(p) for p in paths])


def _import_debugpy(fallback: str | None, applied: list) -> None:
    """The program's own debugpy when it has one; else the copy dbgfwd brought (`fallback`)."""
    try:
        import debugpy  # noqa: F401
        applied.append(f"debugpy {getattr(debugpy, '__version__', '?')} (its own)")
        return
    except ImportError:
        if not fallback:
            raise RuntimeError(f"debugpy is not importable by {sys.executable} (pip install debugpy there)") \
                from None
    sys.path.insert(0, fallback)
    try:
        import debugpy  # noqa: F811
    finally:
        sys.path.remove(fallback)
    applied.append(f"debugpy {getattr(debugpy, '__version__', '?')} (brought by dbgfwd)")


def _remove(paths) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except OSError:
            pass


def _write_result(path: str, result: dict) -> None:
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(result, fh)
        os.replace(tmp, target)
    except OSError:
        pass
