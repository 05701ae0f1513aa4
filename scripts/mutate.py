"""Curated mutation check: does the suite notice when a rule that matters is broken?

Each mutation below breaks one rule of the product in one place (a port bound, a half-close, a
comment kept, a secret redacted, a rank trusted, an exit code). For each, the tests named with it run
against a copy of the repository with only that change; the mutation is *killed* when they fail.
A mutation that survives means those tests cannot see the rule break: fix the tests, not this list.

    python -m scripts.mutate            # all of them (about 4 minutes on 2 cores; root, as CI, for the
                                        # mutations checked on the test hosts and the second user)
    python -m scripts.mutate --list     # what each one breaks and which tests must notice
    python -m scripts.mutate relay-eof-from-rank session-always-alive
    python -m scripts.mutate --json     # one JSON document for scripts

Exit status: 0 when every mutation was killed, 1 when one survived, 2 when one no longer applies
(its code moved: update the snippet here) or its tests could not run.
Not run in CI (it runs parts of the suite once per mutation); its result goes in the closing notes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # file in the repository
    old: str  # must occur exactly once
    new: str
    tests: tuple[str, ...]  # pytest node ids or -k expressions ("-k EXPR" after a path)
    breaks: str  # the rule, in words


MUTATIONS = (
    Mutation("remote-port-bound", "dbgfwd/plan/layout.py",
             "base_port + rpn - 1 > MAX_PORT", "base_port + rpn - 1 >= MAX_PORT",
             ("tests/plan/test_planner.py",), "a plan whose remote ports end exactly at 65535 is refused"),
    Mutation("local-port-bound", "dbgfwd/plan/ports.py",
             "local_base + slots[-1].rank > MAX_PORT", "local_base + slots[-1].rank >= MAX_PORT",
             ("tests/plan/test_planner.py",), "a plan whose local ports end exactly at 65535 is refused"),
    Mutation("relay-eof-from-rank", "dbgfwd/net/relay.py",
             "        elif outcome == SRC_EOF:\n            _shutdown_write(dst)\n",
             "        elif outcome == SRC_EOF:\n            pass\n",
             ("tests/engine/test_engine.py::test_a_half_close_reaches_the_other_side_at_once_and_the_other_"
              "direction_still_flows",), "the rank's end of stream is not passed on to the debugger"),
    Mutation("relay-eof-from-client", "dbgfwd/net/relay.py",
             "        if not self._framer.at_boundary:\n            _shutdown_write(upstream)\n            return\n",
             "        if not self._framer.at_boundary:\n            return\n",
             ("tests/engine/test_engine.py::test_a_half_close_reaches_the_other_side_at_once_and_the_other_"
              "direction_still_flows",), "the client's end of stream is not passed on to the rank"),
    Mutation("detach-before-answers", "dbgfwd/net/relay.py",
             "while self._inflight.pending and not self.closed and time.monotonic() < deadline:",
             "while False:",
             ("tests/providers/local/test_local.py::test_a_debugger_vanishing_with_a_request_in_flight_does_not_"
              "kill_the_ranks_debugpy",),
             "a vanished debugger is detached while the adapter still owes it an answer (debugpy then exits)"),
    Mutation("scanner-reaches-rank", "dbgfwd/net/listeners.py",
             "        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))",
             "        return True",
             ("tests/test_security.py::test_a_connection_that_never_speaks_never_reaches_the_rank",),
             "a connection that never spoke (a port scanner) opens an upstream to the rank"),
    Mutation("comment-dropped", "dbgfwd/vscode/edit.py",
             '    return any("/" in p for p in pieces)', "    return False",
             ("tests/vscode/test_writer.py -k corpus",), "a user's // comment in launch.json is deleted"),
    Mutation("bearer-shown", "dbgfwd/ui/console.py",
             '    (re.compile(r"(?i)(bearer\\s+)[A-Za-z0-9._~+/=-]+"), r"\\1<redacted>"),\n', "",
             ("tests/ui/test_console.py::test_each_redaction_pattern_catches_what_only_it_can",),
             "a bare `Bearer TOKEN` in a log line is printed"),
    Mutation("presigned-url-shown", "dbgfwd/ui/console.py",
             '    (re.compile(r"((?:wss?|https?)://[^\\s?\\"\']+)\\?[^\\s\\"\']+"), r"\\1?<redacted>"),\n', "",
             ("tests/ui/test_console.py::test_each_redaction_pattern_catches_what_only_it_can",),
             "the query string of a URL (presigned S3 logs, SSM StreamUrl) is printed"),
    Mutation("k8s-rank-port", "dbgfwd/providers/kubernetes/discovery.py",
             "ranks = node_ranks(rank_base, ranks_per_pod, base_port) if ranks_per_pod else ()",
             "ranks = node_ranks(rank_base, ranks_per_pod, base_port + 1) if ranks_per_pod else ()",
             ("tests/providers/kubernetes/test_k8s_provider.py::test_pytorchjob_ranks_from_ranks_per_pod",),
             "pods' ranks are looked for one port off base + local rank"),
    Mutation("exit-code-renumbered", "dbgfwd/errors.py",
             "    TIMEOUT = 7  #", "    TIMEOUT = 17  #",
             ("tests/cli/test_help.py::test_exit_codes_are_the_documented_numbers",),
             "an exit code differs from the README's table"),
    Mutation("sigint-exit-code", "dbgfwd/lifecycle.py",
             "EXIT_FOR_SIGNAL = {signal.SIGINT: ExitCode.INTERRUPTED,",
             "EXIT_FOR_SIGNAL = {signal.SIGINT: ExitCode.OK,",
             ("tests/cli/test_interrupt.py::test_ctrl_c_and_sigterm_stop_wait_with_their_own_codes",),
             "Ctrl-C exits 0, so `dbgfwd wait && next` goes on"),
    Mutation("session-always-alive", "dbgfwd/workspace/state.py",
             "        pid = self.pid\n        if pid <= 0:\n            return False\n",
             "        pid = self.pid\n        return True\n",
             ("tests/cli/test_exit_codes.py::test_10_a_session_file_whose_attach_has_died",
              "tests/cli/test_workspace.py::test_status_does_not_trust_a_live_pid_in_a_session_file"),
             "status/wait trust a session file whose attach is gone"),
    Mutation("stale-session-trusted", "dbgfwd/workspace/state.py",
             "        return age if age > STALE_AFTER else None", "        return None",
             ("tests/cli/test_workspace.py::test_a_session_that_stopped_being_refreshed_is_not_reported_healthy",),
             "status/wait trust a session file an attach stopped refreshing (SIGSTOP, hung)"),
    Mutation("foreign-marker-trusted", "dbgfwd/rank/markers.py",
             "if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size > MARKER_MAX_BYTES:",
             "if not stat.S_ISREG(st.st_mode) or st.st_size > MARKER_MAX_BYTES:",
             ("tests/test_shared_machine.py::test_markers_are_trusted_only_as_the_users_own_regular_small_files",),
             "a rank marker written by another user is believed"),
    Mutation("other-job-forwarded", "dbgfwd/plan/layout.py",
             "return [m for m in markers if base_port is None or m.port - m.local_rank == base_port]",
             "return list(markers)",
             ("tests/cli/test_env_and_options.py::test_dbgfwd_workspace_provider_and_base_port_are_read_from_the_"
              "environment",), "ranks of another job (another base port) are taken for this one's"),
    Mutation("state-files-readable", "dbgfwd/fsutil.py",
             "        os.fchmod(fd, item.mode)\n", "        os.fchmod(fd, item.mode | 0o044)\n",
             ("tests/test_security.py::test_state_files_and_backups_are_private",),
             "session and port files are readable by other users"),
    Mutation("children-debugged", "dbgfwd/rank/debuggee.py",
             "debugpy.configure(subProcess=sub_process)", "debugpy.configure(subProcess=True)",
             ("tests/rank/test_launcher.py -k sub_process",),
             "every child process of a rank is debugged (and waits for a session) without --sub-process"),
    Mutation("rank-binds-everywhere", "dbgfwd/rank/launcher.py",
             'p.add_argument("--host", default="127.0.0.1",', 'p.add_argument("--host", default="0.0.0.0",',
             ("tests/test_security.py::test_forwards_and_ranks_listen_on_loopback_only",),
             "dbgfwd-rank's debugpy listens on every interface by default"),
)


def _copy_repo(dest: Path) -> None:
    """The tracked files plus this checkout's uncommitted edits: what the tests would see here."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = raw.decode()
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _pytest_args(tests: tuple[str, ...]) -> list[list[str]]:
    runs = []
    for spec in tests:
        path, _, expr = spec.partition(" -k ")
        runs.append([path] + (["-k", expr] if expr else []))
    return runs


def run_one(m: Mutation, copy: Path, python: str, timeout: float) -> dict:
    target = copy / m.path
    original = target.read_text()
    count = original.count(m.old)
    if count != 1:
        return {"name": m.name, "result": "stale", "why": f"{m.path}: the snippet occurs {count} times"}
    target.write_text(original.replace(m.old, m.new))
    started = time.monotonic()
    try:
        outcomes = []
        for args in _pytest_args(m.tests):
            proc = subprocess.run([python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args], cwd=copy,
                                  capture_output=True, text=True, timeout=timeout,
                                  env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
            tail = (proc.stdout.strip().splitlines() or [""])[-1]
            outcomes.append((proc.returncode, tail))
            if proc.returncode == 1:
                break  # a test failed: killed
    except subprocess.TimeoutExpired:
        outcomes = [(1, f"timed out after {timeout:.0f} s (a hang is a failure)")]
    finally:
        target.write_text(original)
    seconds = round(time.monotonic() - started, 1)
    if any(code == 1 for code, _ in outcomes):
        result = "killed"
    elif all(code == 0 for code, _ in outcomes):
        result = "survived"
    else:
        result = "error"  # collection error, no tests selected (5), usage (4): the list needs fixing
    return {"name": m.name, "result": result, "seconds": seconds, "why": "; ".join(t for _, t in outcomes)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.mutate", description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="run only these mutations (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutations and the tests that must kill them")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    ap.add_argument("--timeout", type=float, default=600, help="seconds for one mutation's tests (default 600)")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTATIONS}
    if unknown:
        print(f"mutate: unknown mutation {', '.join(sorted(unknown))}; see --list", file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            print(f"{m.name}\n  breaks: {m.breaks}\n  in:     {m.path}\n  tests:  {', '.join(m.tests)}")
        return 0
    python = sys.executable
    results = []
    with tempfile.TemporaryDirectory(prefix="dbgfwd-mutate-") as tmp:
        copy = Path(tmp) / "repo"
        _copy_repo(copy)
        for m in chosen:
            if not args.json:
                print(f"{m.name:<24} ...", end="", flush=True, file=sys.stderr)
            r = run_one(m, copy, python, args.timeout)
            r["breaks"] = m.breaks
            r["tests"] = list(m.tests)
            results.append(r)
            if not args.json:
                print(f"\r{m.name:<24} {r['result']:<9} {r.get('seconds', 0):>6} s  {m.breaks}", file=sys.stderr)
    if args.json:
        print(json.dumps({"mutations": results}, indent=2))
    else:
        killed = sum(r["result"] == "killed" for r in results)
        print(f"\n{killed} of {len(results)} mutations killed", file=sys.stderr)
        for r in results:
            if r["result"] != "killed":
                print(f"  {r['name']}: {r['result']}: {r['why']}", file=sys.stderr)
    if any(r["result"] in ("stale", "error") for r in results):
        return 2
    return 1 if any(r["result"] == "survived" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
