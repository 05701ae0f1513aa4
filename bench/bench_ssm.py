"""Throughput and round-trip time through dbgfwd's native SSM client against the test SSM agent.

    python bench/bench_ssm.py [--mb 20] [--loss 0.05]

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
        total = 0
        with c:
            while (d := c.recv(1 << 20)):
                total += len(d)
            c.sendall(str(total).encode())  # tells the sender everything arrived

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
    for _ in range(mb):
        stream.sendall(block)
    stream.shutdown(socket.SHUT_WR)
    reply = b""
    while (d := stream.recv(64)):
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


def rtt(stream, n: int = 200) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        stream.sendall(b"x" * 64)
        got = 0
        while got < 64:
            got += len(stream.recv(64 - got))
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=20)
    ap.add_argument("--loss", type=float, default=0.05)
    args = ap.parse_args()

    from dbgfwd.providers.base import ProviderConfig
    from dbgfwd.providers.batch import BatchProvider
    from tests.support.batch_world import BatchWorld

    sink, echo = servers()
    sink_port, echo_port = sink.getsockname()[1], echo.getsockname()[1]
    direct = {"up": upload(socket.create_connection(("127.0.0.1", sink_port)), args.mb),
              "echo": download(socket.create_connection(("127.0.0.1", echo_port)), args.mb),
              "rtt": rtt(socket.create_connection(("127.0.0.1", echo_port)))}
    print(f"direct TCP        : upload {direct['up']:8.1f} MB/s  echo {direct['echo']:8.1f} MB/s  "
          f"rtt {direct['rtt']:.3f} ms")
    rows = []
    for loss in (0.0, args.loss):
        with BatchWorld() as world:
            os.environ.update(world.env())
            world.agent.drop = loss
            world.agent.reorder = loss
            _, ci = world.instance()
            job = world.single_job(ci)
            p = BatchProvider(ProviderConfig(targets=(job,)))
            target = p.discover().targets[0]
            try:
                up = upload(p.open_stream(target, sink_port, 20), args.mb)
                ec = download(p.open_stream(target, echo_port, 20), args.mb)
                rt = rtt(p.open_stream(target, echo_port, 20), 100 if loss else 200)
                retx = sum(s.channel.retransmits for s in p._sessions.values() if s.channel)
            finally:
                p.close()
            assert not world.agent.violations, world.agent.violations
        rows.append((loss, up, ec, rt, retx))
        print(f"native SSM {loss:4.0%} loss: upload {up:8.1f} MB/s  echo {ec:8.1f} MB/s  rtt {rt:.3f} ms  "
              f"(retransmitted {retx} messages)")
    best = rows[0]
    print(f"vs session-manager-plugin public figure {PLUGIN_MBPS} MB/s: upload x{best[1] / PLUGIN_MBPS:.0f}, "
          f"echo x{best[2] / PLUGIN_MBPS:.0f}; with {args.loss:.0%} loss: upload x{rows[1][1] / PLUGIN_MBPS:.0f}")
    print(f"native / direct TCP (same run): upload {best[1] / direct['up']:.3f}, echo {best[2] / direct['echo']:.3f}")


if __name__ == "__main__":
    main()
