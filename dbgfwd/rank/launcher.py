"""dbgfwd-rank: run a training script with debugpy listening at base port + local rank.

    dbgfwd-rank [--base-port N] [--host H] [--wait-for-client none|rank0|all] -- script.py args...
    dbgfwd-rank -m package.module args...      dbgfwd-rank -c CODE args...

The rank comes from the launcher's environment (torchrun, Open MPI, PMI/PMIx, Slurm, indexed Jobs,
AWS Batch; see dbgfwd.rank.env). Before the program starts, the rank is made good to debug
(dbgfwd.rank.debuggee): debugpy listens, its requests answer in ~1 ms, torch collectives wait for a
paused rank. Then a readiness marker is written to the runtime directory (dbgfwd.rank.markers) so dbgfwd can
tell the rank is ready without touching the debug port; the marker is removed when the program exits.
The program then runs as `python script.py` would.

Imports nothing but the standard library and (once the arguments are good) debugpy: a training image
needs only `pip install --no-deps dbgfwd debugpy`.
"""

from __future__ import annotations

import argparse
import atexit
import builtins
import importlib.util
import os
import runpy
import signal
import sys
import types
from typing import NoReturn

from dbgfwd import envvars

EXIT_USAGE = 2
EXIT_PORT = 4
EXIT_UNTRUSTED = 5  # as dbgfwd's ExitCode.AUTH
EXIT_MISSING = 9  # as dbgfwd's ExitCode.UNAVAILABLE
_REEXEC_ENV = "DBGFWD_RANK_REEXEC"  # set across our own re-exec only, removed at once


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dbgfwd-rank",
        description="Start debugpy for this rank (port = base + local rank), then run the program.",
        epilog="The rank is read from RANK/LOCAL_RANK (torchrun), OMPI_COMM_WORLD_*, PMIX_RANK, PMI_RANK, "
               "SLURM_PROCID/SLURM_LOCALID, JOB_COMPLETION_INDEX, AWS_BATCH_JOB_NODE_INDEX, in that order. "
               "On Python 3.11+ the program runs with -X frozen_modules=off (the launcher re-executes "
               "itself once, same pid) so breakpoints in standard-library modules bind.",
    )
    p.add_argument("--base-port", type=int, default=int(os.environ.get(envvars.BASE_PORT, "5678")),
                   help="debugpy port of local rank 0 (default 5678, or $DBGFWD_BASE_PORT)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address debugpy binds (default 127.0.0.1; anything else lets others run code in "
                        "your process)")
    p.add_argument("--wait-for-client", choices=("none", "rank0", "all"), default="none",
                   help="block before the program starts until a debugger attaches: nobody, rank 0, or all")
    p.add_argument("--sub-process", action="store_true",
                   help="also debug child processes (announced over the same port)")
    p.add_argument("--collective-timeout", metavar="DURATION",
                   default=os.environ.get(envvars.COLLECTIVE_TIMEOUT, envvars.COLLECTIVE_TIMEOUT_DEFAULT),
                   help="raise the timeout of torch process groups the program creates to this (e.g. 2h, 90m, "
                        "3600), so a rank paused at a breakpoint does not make the others' collectives fail; "
                        "'keep' leaves the program's own (default 2h, or $DBGFWD_COLLECTIVE_TIMEOUT)")
    p.add_argument("--stack-signal", type=int, metavar="SIGNAL", default=None,
                   help="signal on which the rank writes its threads' stacks for `dbgfwd stacks` (default "
                        "SIGRTMIN+7, which programs and launchers leave alone; 0: no handler)")
    p.add_argument("-v", "--verbose", action="store_true",
                   default=os.environ.get(envvars.RANK_VERBOSE, "") not in ("", "0"),
                   help="say on stderr what was changed in the rank (or $DBGFWD_RANK_VERBOSE=1)")
    p.add_argument("-m", dest="module", help="run a module like python -m")
    p.add_argument("-c", dest="code", help="run code like python -c")
    p.add_argument("program", nargs=argparse.REMAINDER, help="script.py and its arguments (after --)")
    return p


def _fail(msg: str, code: int) -> NoReturn:
    print(f"dbgfwd-rank: error: {msg}", file=sys.stderr)
    sys.exit(code)


def _say(msg: str) -> None:
    print(f"dbgfwd-rank: {msg}", file=sys.stderr, flush=True)


def _program(args: argparse.Namespace) -> tuple[str, str | None, list[str]]:
    """(kind, what, argv rest): ("script", path, args) | ("module", name, args) | ("code", source, args)."""
    program = list(args.program)
    if program and program[0] == "--":
        program = program[1:]
    if args.module is None and args.code is None and len(program) >= 2 and program[0] in ("-m", "-c"):
        flag, what, program = program[0], program[1], program[2:]  # `-- -c CODE`, `-- -m mod` as python takes them
        return ("module" if flag == "-m" else "code"), what, program
    if args.module is not None:
        return "module", args.module, program
    if args.code is not None:
        return "code", args.code, program
    if not program:
        _fail("nothing to run: give `-- script.py args`, `-m module args` or `-c CODE args`", EXIT_USAGE)
    return "script", program[0], program[1:]


def _check_program(kind: str, what: str) -> None:
    if kind == "script" and not os.path.isfile(what):
        _fail(f"cannot open {what}: no such file (give the script's path, relative to {os.getcwd()})", EXIT_USAGE)
    if kind == "module":
        top = what.split(".", 1)[0]
        if not top or importlib.util.find_spec(top) is None:  # the top level only: nothing is imported yet
            _fail(f"no module named {top!r} (is the package installed here, or on PYTHONPATH?)", EXIT_USAGE)


def _frozen_modules_on() -> bool:
    """pydevd's own test: a frozen os.path means breakpoints in frozen stdlib modules can be missed."""
    code = getattr(os.path.realpath, "__code__", None)
    return bool(code and code.co_filename.startswith("<frozen"))


def _run_without_frozen_modules(log) -> None:
    """Re-execute this same command (same pid, same flags) with -X frozen_modules=off, where that is safe."""
    reexeced = os.environ.pop(_REEXEC_ENV, None)
    if not _frozen_modules_on():
        return
    orig = getattr(sys, "orig_argv", None)
    if not reexeced and os.name == "posix" and orig and sys.executable:
        os.environ[_REEXEC_ENV] = "1"
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execv(sys.executable, [sys.executable, "-X", "frozen_modules=off", *orig[1:]])
        except OSError as exc:
            os.environ.pop(_REEXEC_ENV, None)
            log(f"cannot re-run with -X frozen_modules=off ({exc})")
    # Could not re-run: keep going, quietly; breakpoints in frozen stdlib modules may not bind.
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    log("frozen modules stay on: breakpoints inside frozen standard-library modules may not bind")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    # after parsing: `dbgfwd-rank --help` and a usage error load none of what runs in the rank (~25 ms)
    from dbgfwd.errors import UntrustedPathError
    from dbgfwd.rank import collectives, debuggee, markers, stackdump
    from dbgfwd.rank import env as rankenv

    log = _say if args.verbose else (lambda msg: None)
    kind, what, rest = _program(args)
    _check_program(kind, what)
    try:
        timeout = collectives.parse_timeout(args.collective_timeout)
    except ValueError as exc:
        _fail(f"--collective-timeout: {exc}", EXIT_USAGE)
    if argv is None:  # run as a program: safe to replace the process image with itself
        _run_without_frozen_modules(log)

    env = rankenv.detect()
    if env is None:
        env = rankenv.detect_or_default()
        _say("no rank environment found (RANK, OMPI_COMM_WORLD_RANK, SLURM_PROCID, ...); running as rank 0")
    port = args.base_port + env.local_rank
    if not 0 < port < 65536:
        _fail(f"port {port} (base {args.base_port} + local rank {env.local_rank}) is out of range", EXIT_USAGE)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        _say(f"warning: debugpy bound to {args.host}: anyone who reaches this port can run code in this process")

    try:  # before anything listens: a runtime directory another user controls is refused
        markers.ensure_runtime_dir(markers.runtime_dir())
    except UntrustedPathError as exc:
        _fail(f"{exc.message}; {exc.hint}", EXIT_UNTRUSTED)
    try:
        debuggee.listen(args.host, port, sub_process=args.sub_process, log=log)
    except ImportError:
        _fail(f"debugpy is not installed for {sys.executable}: pip install debugpy", EXIT_MISSING)
    except debuggee.ListenError as exc:
        _fail(f"rank {env.rank}: cannot listen on {args.host}:{port} ({exc}); is another rank using it? "
              "set a different --base-port", EXIT_PORT)
    if timeout is not None:
        # One notice per job, from rank 0; every rank still says it at -v.
        say = _say if env.rank == 0 else log
        collectives.Guard(timeout, say=say, log=log).install()

    stack = None
    if args.stack_signal != 0:
        stack = stackdump.install(markers.ensure_runtime_dir(markers.runtime_dir()), args.stack_signal)
        if stack is None:
            log("stack dumps for `dbgfwd stacks` unavailable here (cannot register the signal handler)")
    argv0 = {"script": [what], "module": [what], "code": ["-c"]}[kind]
    marker = markers.new_marker(env.rank, env.local_rank, port, args.host, env.world_size, env.source,
                                argv0 + rest, stack=stack)
    path = markers.write_marker(marker)
    _install_cleanup([path] + ([stack.path] if stack else []))

    if args.wait_for_client == "all" or (args.wait_for_client == "rank0" and env.rank == 0):
        _say(f"rank {env.rank} waiting for a debugger on {args.host}:{port}")
        debuggee.wait_for_client()
    _run(kind, what, rest)


def _run(kind: str, what: str, rest: list[str]) -> None:
    if kind == "module":
        sys.argv = [what] + rest
        runpy.run_module(what, run_name="__main__", alter_sys=True)
    elif kind == "code":
        sys.argv = ["-c"] + rest
        sys.path.insert(0, "")
        module = types.ModuleType("__main__")
        module.__builtins__ = builtins  # type: ignore[attr-defined]
        sys.modules["__main__"] = module
        exec(compile(what, "<string>", "exec"), module.__dict__)
    else:
        sys.argv = [what] + rest
        sys.path.insert(0, os.path.dirname(os.path.abspath(what)))
        # As `python script.py` since 3.9: the script's __file__ (and its frames' file names) absolute.
        runpy.run_path(os.path.abspath(what), run_name="__main__")


def _install_cleanup(paths) -> None:
    def remove(*_):
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    atexit.register(remove)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def on_signal(signum, frame):
        remove()
        prev = previous[signum]
        if callable(prev):
            prev(signum, frame)
        else:
            # Default action: die by the same signal so the exit status is what the launcher expects.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    for sig in previous:
        signal.signal(sig, on_signal)
