"""Run the real `dbgfwd` entry point as a subprocess, the way users do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DBGFWD = [sys.executable, "-m", "dbgfwd"]


def run(*args: str, timeout: float = 60, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(DBGFWD + list(args), capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=cwd)


class Background:
    """A long-running dbgfwd command (attach) with its output captured to a file."""

    def __init__(self, *args: str, log: Path, env: dict | None = None, cwd: Path | None = None):
        self.log = log
        full_env = dict(os.environ, **(env or {}))
        self._fh = open(log, "wb")
        self.proc = subprocess.Popen(DBGFWD + list(args), stdout=self._fh, stderr=subprocess.STDOUT, env=full_env,
                                     cwd=cwd, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._fh.close()
        return self.proc.returncode


def wait_ready(workspace: Path, timeout: float = 60, ranks: str | None = None, bg: Background | None = None) -> None:
    args = ["wait", "--timeout", str(timeout), "--workspace", str(workspace)]
    if ranks:
        args += ["--ranks", ranks]
    res = run(*args, timeout=timeout + 30)
    if res.returncode != 0:
        extra = bg.output()[-3000:] if bg else ""
        raise AssertionError(f"dbgfwd wait failed ({res.returncode}): {res.stderr}\n--- attach output ---\n{extra}")


def launch_ports(launch_json: Path) -> dict[int, int]:
    """rank -> local port of every debugpy attach config named "dbgfwd: rank N ..." in launch.json."""
    import re

    doc = json.loads(strip_jsonc(launch_json.read_text()))
    out = {}
    for cfg in doc.get("configurations", []):
        m = re.match(r"dbgfwd: rank (\d+)\b", cfg.get("name", ""))
        if m and cfg.get("type") == "debugpy" and cfg.get("request") == "attach":
            out[int(m.group(1))] = int(cfg["connect"]["port"])
    return out


def strip_jsonc(text: str) -> str:
    """JSONC -> JSON: drop comments and trailing commas (strings kept intact). Independent of dbgfwd's
    own parser on purpose, so tests check the written file with a second reader."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            while i < n and text[i] not in "\r\n":
                i += 1
        elif text.startswith("/*", i):
            i = text.index("*/", i + 2) + 2
        else:
            out.append(c)
            i += 1
    import re

    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


def wait_for(predicate, timeout: float = 30, what: str = "condition", interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def session(workspace: Path) -> dict:
    return json.loads((workspace / ".dbgfwd" / "session.json").read_text())
