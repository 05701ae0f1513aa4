"""Link outages between the laptop and a host, with a debugger stopped at a breakpoint (not a test: figures).

    python -m bench.outage [--cuts 5,30,300]

For each outage length: `dbgfwd attach` over SSH (OpenSSH's default keepalive, 15 s x 3) to a test host in its
own network namespace; a DAP client attaches to a real debugpy rank there and stops at a breakpoint; the
host's link is taken down (silent loss: no FIN, no RST) for that long with an `evaluate` in flight, then
brought back. Printed per outage:

- whether the debugger's connection survived, and the seconds from the link's return to the in-flight answer;
- otherwise the seconds from the link's return until a new debugger session through the same forward works
  (what the user waits for before pressing F5 again), and whether the rank's debugpy survived.
"""

from __future__ import annotations

import argparse
import json
import time

from tests.providers.ssh.helpers import config_with
from tests.support import cli
from tests.support.dap import DapClient, DapError, debug_round
from tests.support.netns import Lab
from tests.support.ranks import BREAK_LINE, start_rank, wait_for_markers, write_program


def one_outage(seconds: float) -> dict:
    import os
    import subprocess
    import sys

    lab = Lab()
    try:
        host = lab.add_host("h1")
        inside = f"/tmp/dbgfwd-{os.getuid()}"
        program = write_program(lab.directory)
        rank = start_rank(program, 0, 0, lab.directory / "ranks", base_port=5678, world_size=1,
                          cmd_prefix=host.prefix(), extra_env={"DBGFWD_RUNTIME_DIR": inside,
                                                               "PYTHONPATH": os.getcwd()})
        wait_for_markers(host.path(inside), {0}, procs=[rank])
        config = config_with(lab, lab.directory / "ssh_config", {"node1": (host, {})})
        ws = lab.directory / "ws"
        ws.mkdir()
        log = open(lab.directory / "attach.log", "wb")
        attach = subprocess.Popen([*lab.client.prefix(), sys.executable, "-m", "dbgfwd", "attach", "--provider", "ssh",
                                   "node1", "--ssh-config", str(config), "--workspace", str(ws)],
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            cli.wait_ready(ws, 60)
            port = cli.launch_ports(ws / ".vscode" / "launch.json")[0]
            with lab.client.inside():
                client = DapClient("127.0.0.1", port, timeout=seconds + 120)
            client.attach({str(program): [BREAK_LINE]})
            thread = client.wait_stopped(60)["body"]["threadId"]
            frame = client.top_frame(thread)["id"]
            host.cut()
            time.sleep(min(1.0, seconds / 2))
            pending = client.send_request("evaluate", {"expression": "rank", "frameId": frame, "context": "repl"})
            time.sleep(max(0.0, seconds - min(1.0, seconds / 2)))
            host.restore()
            back = time.monotonic()
            out: dict = {"outage_s": seconds}
            try:
                client.wait_response(pending, timeout=90)
                out.update(debugger_kept=True, answer_after_s=round(time.monotonic() - back, 2))
                client.continue_(thread)
                client.disconnect()
            except (DapError, OSError) as exc:
                client.close()
                out.update(debugger_kept=False, lost_because=str(exc)[:80])
                while time.monotonic() - back < 120:
                    try:
                        with lab.client.inside():
                            debug_round("127.0.0.1", port, str(program), BREAK_LINE, "rank", timeout=10)
                        out["new_session_after_s"] = round(time.monotonic() - back, 2)
                        break
                    except (DapError, OSError):
                        time.sleep(0.5)
                out["rank_debugpy_alive"] = "new_session_after_s" in out
            return out
        finally:
            attach.terminate()
            attach.wait(20)
            log.close()
            rank.stop()
    finally:
        lab.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuts", default="5,30,300", help="outage lengths in seconds, comma-separated")
    args = ap.parse_args()
    for s in args.cuts.split(","):
        print(json.dumps(one_outage(float(s))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
