"""SSH forwarding benchmark: OpenSSH `ssh -L` vs `dbgfwd attach --provider ssh` over the same sshd.

    sudo python bench/bench_ssh.py [--rtt-count 2000] [--bulk-mb 64] [--hosts 8] [--ranks 8]

Needs root (network namespaces, like tests/providers/ssh). Prints figures; asserts nothing.
Measured in one run: small-message round trip p50/p99 and bulk throughput through each tunnel;
time from `dbgfwd attach` start to all ranks ready for HOSTS x RANKS; time from a host's sshd
coming back to the forward being usable again (ssh -L has no reconnect: its baseline is "never").
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dbgfwd.rank.markers import parse_proc_net_tcp  # noqa: E402
from tests.support.netns import Lab  # noqa: E402

ECHO_PORT, SOURCE_PORT = 9000, 9001
SERVERS = r'''
import socket, sys, threading
def echo(c):
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
def source(c, n):
    c.recv(2)  # the client's "go" (unread, the close below would reset the connection)
    chunk = b"x" * 65536
    left = n
    while left > 0:
        c.sendall(chunk[:min(left, 65536)]); left -= 65536
    c.close()
def serve(port, fn, *a):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port)); s.listen(64)
    while True:
        c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=fn, args=(c, *a), daemon=True).start()
ports = [int(p) for p in sys.argv[2:]]
if sys.argv[1] == "bench":
    threading.Thread(target=serve, args=(ports[0], echo), daemon=True).start()
    serve(ports[1], source, int(sys.argv[4]) if len(sys.argv) > 4 else 0)
else:
    for p in ports: threading.Thread(target=serve, args=(p, echo), daemon=True).start()
    threading.Event().wait()
'''


def env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")


def listening(node) -> set[int]:
    return {p for _, p in parse_proc_net_tcp(node.run(["cat", "/proc/net/tcp"]).stdout)}


def wait_until(pred, timeout=60.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    raise TimeoutError("condition not reached")


def rtt(lab, port: int, count: int) -> tuple[float, float]:
    with lab.client.inside():
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"m" * 64
    samples = []
    for _ in range(count):
        t = time.perf_counter()
        s.sendall(msg)
        got = 0
        while got < len(msg):
            got += len(s.recv(4096))
        samples.append((time.perf_counter() - t) * 1e6)
    s.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def bulk(lab, port: int, nbytes: int) -> float:
    with lab.client.inside():
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
    t = time.perf_counter()
    s.sendall(b"go")  # dbgfwd opens a rank's upstream only for a client that has spoken (the source ignores it)
    got = 0
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        got += len(d)
    dt = time.perf_counter() - t
    s.close()
    assert got == nbytes, (got, nbytes)
    return got / dt / 1e6


def attach(lab, ws: Path, config: Path, hosts, *extra) -> subprocess.Popen:
    ws.mkdir(parents=True, exist_ok=True)
    log = open(ws / "attach.log", "wb")
    return subprocess.Popen([*lab.client.prefix(), sys.executable, "-m", "dbgfwd", "attach", "--provider", "ssh",
                             *hosts, "--ssh-config", str(config), "--workspace", str(ws), *extra],
                            stdout=log, stderr=subprocess.STDOUT, env=env(), start_new_session=True)


def ranks_state(ws: Path) -> list[dict]:
    try:
        return json.loads((ws / ".dbgfwd" / "session.json").read_text())["ranks"]
    except (OSError, ValueError, KeyError):
        return []


def all_ready(ws: Path, n: int) -> bool:
    rows = ranks_state(ws)
    return len(rows) == n and all(r["state"] in ("ready", "connected") for r in rows)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def bench_tunnels(lab, args) -> None:
    h1 = lab.add_host("b1")
    config = lab.write_ssh_config(overrides={"b1": {"ServerAliveInterval": 1, "ServerAliveCountMax": 2,
                                                    "ConnectTimeout": 3}})
    nbytes = args.bulk_mb << 20
    servers = h1.popen([sys.executable, "-c", SERVERS, "bench", str(ECHO_PORT), str(SOURCE_PORT), str(nbytes)])
    wait_until(lambda: {ECHO_PORT, SOURCE_PORT} <= listening(h1))
    procs = [servers]
    try:
        # OpenSSH baseline: one ssh -L with two forwards on one connection.
        l_echo, l_src = 42000, 42001
        ssh = lab.client.popen(["ssh", "-F", str(config), "-N", "-o", "BatchMode=yes",
                                "-L", f"127.0.0.1:{l_echo}:127.0.0.1:{ECHO_PORT}",
                                "-L", f"127.0.0.1:{l_src}:127.0.0.1:{SOURCE_PORT}", "b1"])
        procs.append(ssh)
        wait_until(lambda: {l_echo, l_src} <= listening(lab.client))
        ssh_rtt = rtt(lab, l_echo, args.rtt_count)
        ssh_bulk = bulk(lab, l_src, nbytes)

        ws = lab.directory / "ws-tunnel"
        run = attach(lab, ws, config, ["b1"], "--base-port", str(ECHO_PORT), "--ranks-per-node", "2",
                     "--local-base-port", "43000", "--no-launch-json")
        procs.append(run)
        wait_until(lambda: all_ready(ws, 2), 60)
        d_rtt = rtt(lab, 43000, args.rtt_count)
        d_bulk = bulk(lab, 43001, nbytes)

        print(f"\n== tunnel over one sshd ({args.rtt_count} x 64 B round trips, {args.bulk_mb} MiB bulk) ==")
        print(f"{'':12}{'RTT p50 us':>12}{'RTT p99 us':>12}{'bulk MB/s':>12}")
        print(f"{'ssh -L':12}{ssh_rtt[0]:12.0f}{ssh_rtt[1]:12.0f}{ssh_bulk:12.1f}")
        print(f"{'dbgfwd':12}{d_rtt[0]:12.0f}{d_rtt[1]:12.0f}{d_bulk:12.1f}")
        print(f"{'ratio':12}{d_rtt[0] / ssh_rtt[0]:12.2f}{d_rtt[1] / ssh_rtt[1]:12.2f}{d_bulk / ssh_bulk:12.2f}")

        # Host back -> forward usable. Kill every sshd on the host, restart it, time until a round
        # trip through the (never closed) local port succeeds.
        samples = []
        for _ in range(args.failover_rounds):
            h1.kill_sshd()
            time.sleep(3)  # long enough for dbgfwd to notice and start backing off
            h1.start_sshd()
            t0 = time.perf_counter()
            with lab.client.inside():
                s = socket.create_connection(("127.0.0.1", 43000), timeout=60)
            s.settimeout(60)
            s.sendall(b"ping")
            assert s.recv(16) == b"ping"
            samples.append(time.perf_counter() - t0)
            s.close()
        print(f"\n== host back -> forward usable ({args.failover_rounds} rounds, sshd killed 3 s) ==")
        print(f"dbgfwd: median {statistics.median(samples):.2f} s, max {max(samples):.2f} s; "
              f"ssh -L: {'exited' if ssh.poll() is not None else 'still running'} (no reconnect: never)")
    finally:
        servers.kill()
        for p in procs[1:]:
            stop(p)
        servers.wait(5)


def bench_attach(lab, args) -> None:
    names = [f"n{i}" for i in range(args.hosts)]
    servers = []
    for name in names:
        host = lab.add_host(name)
        servers.append(host.popen([sys.executable, "-c", SERVERS, "ranks",
                                   *[str(5678 + i) for i in range(args.ranks)]]))
    config = lab.write_ssh_config()
    for name in names:
        wait_until(lambda h=lab.hosts[name]: len(listening(h)) >= args.ranks + 1)
    try:
        samples = []
        for i in range(args.attach_rounds):
            ws = lab.directory / f"ws-attach-{i}"
            t0 = time.perf_counter()
            run = attach(lab, ws, config, names, "--ranks-per-node", str(args.ranks), "--local-base-port", "44000",
                         "--no-launch-json")
            try:
                wait_until(lambda: all_ready(ws, args.hosts * args.ranks), 120)
                samples.append(time.perf_counter() - t0)
            finally:
                stop(run)
        print(f"\n== attach start -> all {args.hosts * args.ranks} ranks ready ({args.hosts} hosts x {args.ranks}) ==")
        print(f"dbgfwd: median {statistics.median(samples):.2f} s over {len(samples)} runs "
              f"(includes Python start-up, ssh handshakes, out-of-band probes)")
    finally:
        for p in servers:
            p.kill()
            p.wait(5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rtt-count", type=int, default=2000)
    ap.add_argument("--bulk-mb", type=int, default=64)
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--attach-rounds", type=int, default=3)
    ap.add_argument("--failover-rounds", type=int, default=3)
    args = ap.parse_args()
    reason = Lab.supported()
    if reason:
        sys.exit(f"bench_ssh: {reason}")
    with Lab() as lab:
        bench_tunnels(lab, args)
        bench_attach(lab, args)


if __name__ == "__main__":
    main()
