"""dbgfwd-rank: run a training script with debugpy listening at base port + local rank.

    dbgfwd-rank [--base-port N] [--host H] [--wait-for-client none|rank0|all] -- script.py args...
    dbgfwd-rank -m package.module args...

The rank comes from the launcher's environment (torchrun, Open MPI, PMI/PMIx, Slurm, indexed Jobs,
AWS Batch; see dbgfwd.rankenv). After debugpy listens, a readiness marker is written to the runtime
directory (dbgfwd.markers) so dbgfwd can tell the rank is ready without touching the debug port;
the marker is removed when the program exits. The program then runs as `python script.py` would.
"""

from __future__ import annotations

import argparse
import atexit
import os
import runpy
import signal
import sys
from typing import NoReturn

from dbgfwd import envvars, markers, rankenv

EXIT_USAGE = 2
EXIT_PORT = 4


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dbgfwd-rank",
        description="Start debugpy for this rank (port = base + local rank), then run the program.",
        epilog="The rank is read from RANK/LOCAL_RANK (torchrun), OMPI_COMM_WORLD_*, PMIX_RANK, PMI_RANK, "
               "SLURM_PROCID/SLURM_LOCALID, JOB_COMPLETION_INDEX, AWS_BATCH_JOB_NODE_INDEX, in that order.",
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
    p.add_argument("-m", dest="module", help="run a module like python -m")
    p.add_argument("program", nargs=argparse.REMAINDER, help="script.py and its arguments (after --)")
    return p


def _fail(msg: str, code: int) -> NoReturn:
    print(f"dbgfwd-rank: error: {msg}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    program = list(args.program)
    if program and program[0] == "--":
        program = program[1:]
    if not args.module and not program:
        _fail("nothing to run: give `-- script.py args` or `-m module args`", EXIT_USAGE)

    env = rankenv.detect()
    if env is None:
        env = rankenv.detect_or_default()
        print("dbgfwd-rank: no rank environment found (RANK, OMPI_COMM_WORLD_RANK, SLURM_PROCID, ...); "
              "running as rank 0", file=sys.stderr)
    port = args.base_port + env.local_rank
    if not 0 < port < 65536:
        _fail(f"port {port} (base {args.base_port} + local rank {env.local_rank}) is out of range", EXIT_USAGE)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"dbgfwd-rank: warning: debugpy bound to {args.host}: anyone who reaches this port can run "
              "code in this process", file=sys.stderr)

    import debugpy

    if args.sub_process:
        debugpy.configure(subProcess=True)
    try:
        debugpy.listen((args.host, port))
    except Exception as exc:  # debugpy raises RuntimeError wrapping the bind error
        _fail(f"rank {env.rank}: cannot listen on {args.host}:{port} ({exc}); is another rank using it? "
              "set a different --base-port", EXIT_PORT)

    marker = markers.new_marker(env.rank, env.local_rank, port, args.host, env.world_size, env.source,
                                [args.module] if args.module else program)
    path = markers.write_marker(marker)
    _install_cleanup(path)

    if args.wait_for_client == "all" or (args.wait_for_client == "rank0" and env.rank == 0):
        print(f"dbgfwd-rank: rank {env.rank} waiting for a debugger on {args.host}:{port}", file=sys.stderr)
        debugpy.wait_for_client()

    if args.module:
        sys.argv = [args.module] + program
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    else:
        script = program[0]
        sys.argv = program
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
        runpy.run_path(script, run_name="__main__")


def _install_cleanup(path) -> None:
    def remove(*_):
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


if __name__ == "__main__":
    main()
