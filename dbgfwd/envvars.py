"""Every environment variable dbgfwd reads, in one place (listed in `dbgfwd --help`)."""

from __future__ import annotations

WORKSPACE = "DBGFWD_WORKSPACE"  # workspace folder (default: current directory)
PROVIDER = "DBGFWD_PROVIDER"  # default provider for attach/ls
BASE_PORT = "DBGFWD_BASE_PORT"  # remote debugpy base port (default 5678)
RUNTIME_DIR = "DBGFWD_RUNTIME_DIR"  # where rank markers live (default /tmp/dbgfwd-<uid>)
DEBUG = "DBGFWD_DEBUG"  # "1": show tracebacks, like --debug
COLLECTIVE_TIMEOUT = "DBGFWD_COLLECTIVE_TIMEOUT"  # dbgfwd-rank: raise torch collective timeouts to this
COLLECTIVE_TIMEOUT_DEFAULT = "2h"  # long enough for a debugging session; a real hang still ends, hours later
RANK_VERBOSE = "DBGFWD_RANK_VERBOSE"  # "1": dbgfwd-rank says what it changed, like -v
NO_COLOR = "NO_COLOR"  # any value: no colour
GDB = "DBGFWD_GDB"  # attach --inject: the gdb to use where the ranks run, when it is not on PATH there

ALL = {
    WORKSPACE: "workspace folder holding .dbgfwd/ and .vscode/ (default: current directory)",
    PROVIDER: "provider used when --provider is not given",
    BASE_PORT: "remote debugpy base port (default 5678)",
    RUNTIME_DIR: "directory for rank readiness markers (default $XDG_RUNTIME_DIR/dbgfwd, else /tmp/dbgfwd-<uid>)",
    DEBUG: "set to 1 to print tracebacks (same as --debug)",
    COLLECTIVE_TIMEOUT: "dbgfwd-rank: torch collective timeout while debugging (default 2h; keep = program's own)",
    RANK_VERBOSE: "set to 1 to have dbgfwd-rank report each change it makes in the rank (same as its -v)",
    NO_COLOR: "disable colour output",
    GDB: "attach --inject: path of gdb where the ranks run, when it is not on PATH there",
    "SLURM_JOB_NODELIST": "read by the ssh provider when no hosts are given (inside a Slurm allocation)",
}


def help_text() -> str:
    return "\n".join(f"  {k}\n      {v}" for k, v in ALL.items())
