"""Throughput and round-trip time through dbgfwd's SSM backends against the test SSM agent.

    python bench/bench_ssm.py [--mb 20] [--plugin-mb 4] [--loss 0.02] [--backends native,plugin]

`native` is dbgfwd's own client; `plugin` the real session-manager-plugin (1.2.0.0, built from AWS's source,
../shared/tools/session-manager-plugin, or $DBGFWD_SSM_PLUGIN), both in the same run.

Everything runs on loopback: BatchProvider.open_stream -> smux stream -> data channel (1 KiB
messages, acks, digests) -> websocket -> test agent -> TCP sink/echo. A direct TCP connection to
the same servers, measured in the same run, is the baseline. Prints figures; asserts nothing.
Public reports put session-manager-plugin port forwarding at 0.6-0.8 MB/s (amazon-ssm-agent #664).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PLUGIN_MBPS = 0.8  # upper end of the public figure


def servers():
    sink = socket.create_server(("127.0.0.1", 0))
    echo = socket.create_server(("127.0.0.1", 0))

    def serve(srv, fn):
        def loop():
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                threading.Thread(target=fn, args=(c,), daemon=True).start()
        threading.Thread(target=loop, daemon=True).start()

    def drain(c):
        # 8 bytes of length first, then that many bytes; the answer says all arrived. (No half-close: the SSM
        # agent closes a stream's target connection fully when the client closes its side.)
        with c:
            head = b""
            while len(head) < 8 and (d := c.recv(8 - len(head))):
                head += d
            want, total = int.from_bytes(head, "big"), 0
            while total < want and (d := c.recv(1 << 20)):
                total += len(d)
            c.sendall(str(total).encode())

    def echo_fn(c):
        with c:
            while (d := c.recv(65536)):
                c.sendall(d)

    serve(sink, drain)
    serve(echo, echo_fn)
    return sink, echo


def upload(stream, mb: int) -> float:
    block = os.urandom(1 << 20)
    t0 = time.perf_counter()
    stream.sendall((mb << 20).to_bytes(8, "big"))
    for _ in range(mb):
        stream.sendall(block)
    reply = b""
    while len(reply) < len(str(mb << 20)) and (d := stream.recv(64)):
        reply += d
    dt = time.perf_counter() - t0
    assert int(reply) == mb << 20, reply
    return mb * 1.048576 / dt  # MB/s (10^6 bytes)


def download(stream, mb: int) -> float:
    """Echo-based: bytes go up and come back; counts the returned bytes."""
    block = os.urandom(1 << 16)
    total = mb << 20
    got = [0]

    def reader():
        while got[0] < total:
            d = stream.recv(1 << 20)
            if not d:
                return
            got[0] += len(d)
    t = threading.Thread(target=reader)
    t0 = time.perf_counter()
    t.start()
    for _ in range(total // len(block)):
        stream.sendall(block)
    t.join()
    dt = time.perf_counter() - t0
    return mb * 1.048576 / dt


def rtt(stream, n: int = 200) -> tuple[float, float]:
    """(p50, p99) round trip of a 64-byte message, ms."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        stream.sendall(b"x" * 64)
        got = 0
        while got < 64:
            got += len(stream.recv(64 - got))
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return statistics.median(samples) * 1000, samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=20)
    ap.add_argument("--plugin-mb", type=int, default=4, help="MB per direction through the plugin (~0.6 MB/s)")
    ap.add_argument("--loss", type=float, default=0.02)
    ap.add_argument("--backends", default="native,plugin")
    args = ap.parse_args()
    plugin = os.environ.get("DBGFWD_SSM_PLUGIN") or str(Path(__file__).resolve().parents[2] / "shared" / "tools" /
                                                          "session-manager-plugin" / "session-manager-plugin")

    from dbgfwd.providers.base import ProviderConfig
    from dbgfwd.providers.batch import BatchProvider
    from tests.support.batch_world import BatchWorld

    sink, echo = servers()
    sink_port, echo_port = sink.getsockname()[1], echo.getsockname()[1]
    direct = {"up": upload(socket.create_connection(("127.0.0.1", sink_port)), args.mb),
              "echo": download(socket.create_connection(("127.0.0.1", echo_port)), args.mb),
              "rtt": rtt(socket.create_connection(("127.0.0.1", echo_port)))}
    print(f"direct TCP           : upload {direct['up']:8.1f} MB/s  echo {direct['echo']:8.1f} MB/s  "
          f"rtt p50 {direct['rtt'][0]:.3f} ms  p99 {direct['rtt'][1]:.3f} ms")
    rows = []
    for backend in args.backends.split(","):
        mb = args.mb if backend == "native" else args.plugin_mb
        if backend == "plugin":
            os.environ["DBGFWD_SSM_PLUGIN"] = plugin
        for loss in (0.0, args.loss):
            with BatchWorld() as world:
                os.environ.update(world.env())
                _, ci = world.instance()
                job = world.single_job(ci)
                p = BatchProvider(ProviderConfig(targets=(job,), options={"ssm_backend": backend}))
                target = p.discover().targets[0]
                try:
                    streams = [p.open_stream(target, port, 30) for port in (sink_port, echo_port, echo_port)]
                    world.agent.drop = loss  # once the session is up: the handshake is not what is measured
                    world.agent.reorder = loss
                    up = upload(streams[0], mb)
                    ec = download(streams[1], mb)
                    rt = rtt(streams[2], 100 if loss else 200)
                    retx = sum(getattr(getattr(s, "channel", None), "retransmits", 0) for s in p._sessions.values())
                finally:
                    p.close()
                assert not world.agent.violations, world.agent.violations
            rows.append((backend, loss, up, ec, rt, retx))
            print(f"{backend:6} SSM {loss:4.0%} loss: upload {up:8.2f} MB/s  echo {ec:8.2f} MB/s  rtt p50 {rt[0]:.2f} ms "
                  f"p99 {rt[1]:.2f} ms" + (f"  (retransmitted {retx} messages)" if backend == "native" else ""))
    rows = [r[1:] for r in rows if r[0] == "native"] or [r[1:] for r in rows]
    best = rows[0]
    print(f"vs session-manager-plugin public figure {PLUGIN_MBPS} MB/s: upload x{best[1] / PLUGIN_MBPS:.0f}, "
          f"echo x{best[2] / PLUGIN_MBPS:.0f}; with {args.loss:.0%} loss: upload x{rows[1][1] / PLUGIN_MBPS:.0f}")
    print(f"native / direct TCP (same run): upload {best[1] / direct['up']:.3f}, echo {best[2] / direct['echo']:.3f}")


if __name__ == "__main__":
    main()
