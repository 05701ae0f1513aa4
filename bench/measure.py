"""Per-path measurements: DAP round trip, raw round trip, bulk throughput, reconnect.

Every function takes an endpoint (host, port) a path produced and returns plain numbers.
Timings use time.perf_counter(); nothing here asserts: the runner prints and records.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time

from tests.support.dap import DapClient


def percentiles(samples_s: list[float]) -> dict:
    """p50/p99/mean in microseconds."""
    xs = sorted(samples_s)
    if not xs:
        return {}

    def pct(q: float) -> float:
        return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] * 1e6

    return {"p50_us": pct(0.50), "p99_us": pct(0.99), "mean_us": statistics.fmean(xs) * 1e6, "n": len(xs)}


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed early")
        buf += chunk
    return bytes(buf)


def raw_rtt(endpoint, count: int, size: int = 64, warmup: int = 200) -> dict:
    """Round trip of `size`-byte messages through the echo service."""
    with socket.create_connection(endpoint, timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"E")
        msg = b"m" * size
        samples = []
        for i in range(warmup + count):
            t = time.perf_counter()
            s.sendall(msg)
            _recv_exact(s, size)
            if i >= warmup:
                samples.append(time.perf_counter() - t)
    return percentiles(samples)


def throughput(endpoint, total: int, chunk: int = 1 << 20) -> dict:
    """Upload `total` bytes to the sized sink; MB/s (10^6 bytes) until the sink's byte count returns.

    The length goes first (no half-close), so every path is measured the same way, including the
    Kubernetes port-forward, whose protocol ends the whole stream when the client stops writing."""
    data = memoryview(bytes(range(256)) * (chunk // 256))
    with socket.create_connection(endpoint, timeout=60) as s:
        s.sendall(b"N" + total.to_bytes(8, "big"))
        t = time.perf_counter()
        sent = 0
        while sent < total:
            n = min(chunk, total - sent)
            s.sendall(data[:n])
            sent += n
        reply = b""
        while not reply.endswith(b"\n"):
            part = s.recv(256)
            if not part:
                break
            reply += part
        elapsed = time.perf_counter() - t
    count = int(reply.split()[0]) if reply else -1
    if count != total:
        raise RuntimeError(f"sink counted {count} bytes of {total}")
    return {"mb_s": total / elapsed / 1e6, "bytes": total, "seconds": elapsed}


def dap_rtt(endpoint, program: str, line: int, count: int) -> dict:
    """Attach like VS Code, stop at a breakpoint, then time `threads`, `evaluate` and `stackTrace` requests."""
    client = DapClient(*endpoint, timeout=60)
    try:
        t = time.perf_counter()
        client.attach({program: [line]})
        stopped = client.wait_stopped(60)
        attach_s = time.perf_counter() - t
        thread_id = stopped["body"]["threadId"]
        frame_id = client.top_frame(thread_id)["id"]
        out = {"attach_to_stopped_s": attach_s}
        stack_args = {"threadId": thread_id, "startFrame": 0, "levels": 20}
        for name, call in (("threads", lambda: client.request("threads")),
                           ("evaluate", lambda: client.evaluate("value", frame_id)),
                           ("stackTrace", lambda: client.request("stackTrace", stack_args))):
            for _ in range(20):
                call()
            samples = []
            for _ in range(count):
                t = time.perf_counter()
                call()
                samples.append(time.perf_counter() - t)
            out[name] = percentiles(samples)
        client.request("setBreakpoints", {"source": {"path": program}, "breakpoints": []})
        client.continue_(thread_id)
        return out
    finally:
        client.disconnect()


def echo_once(endpoint, timeout: float) -> bool:
    try:
        with socket.create_connection(endpoint, timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"Ex")
            return s.recv(1) == b"x"
    except OSError:
        return False


class Reconnector:
    """A client that keeps trying (connect, echo one byte) every `interval` until it succeeds.

    Started while the upstream is down; `done_at` is when its first echo came back. A forward that
    holds clients (dbgfwd) keeps one connection open; plain forwarders get refused/closed and retried.
    """

    def __init__(self, endpoint, interval: float = 0.02, attempt_timeout: float = 30.0):
        self.endpoint, self.interval, self.attempt_timeout = endpoint, interval, attempt_timeout
        self.done_at: float | None = None
        self.attempts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Reconnector":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.attempts += 1
            if echo_once(self.endpoint, self.attempt_timeout):
                self.done_at = time.monotonic()
                return
            self._stop.wait(self.interval)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        self._stop.set()
