"""A stand-in rank for benchmarks and fault tests: a plain TCP server registered with a rank marker.

    python tests/support/echo_server.py --port 0 --rank 0 --marker-dir DIR
        prints "ready <port>" once it listens and its marker is written.
    ... --count N   N cheap ranks (rank .. rank+N-1), one forked process each (a marker names one pid),
        ports --port + i (or ephemeral with --port 0); prints "ready <port> <port> ..." when all are up.
    From Python: `EchoServer.start(...)` / `.kill()` / `.stop()`.

The first byte of each connection picks the service:
    E  echo every byte back until EOF (then half-close)
    S  sink: read to EOF, answer "<count> <sha256 hex>\n"
    N  sized sink: an 8-byte big-endian length N, then N bytes; answer as S, without needing a
       half-close (which the Kubernetes port-forward protocol cannot carry)
    Z  stay silent until EOF (a connection that only holds a slot)

It uses only the standard library and dbgfwd.rank.markers so it starts fast and can be SIGKILLed and
restarted many times. It exits on SIGTERM after removing its marker (SIGKILL leaves a dead marker,
which readers ignore because its pid is gone).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

BUF = 256 * 1024


def _echo(conn: socket.socket) -> None:
    buf = bytearray(BUF)
    view = memoryview(buf)
    while True:
        n = conn.recv_into(buf)
        if not n:
            conn.shutdown(socket.SHUT_WR)
            return
        conn.sendall(view[:n])


def _sink(conn: socket.socket) -> None:
    digest = hashlib.sha256()
    count = 0
    buf = bytearray(BUF)
    view = memoryview(buf)
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        digest.update(view[:n])
        count += n
    conn.sendall(f"{count} {digest.hexdigest()}\n".encode())
    conn.shutdown(socket.SHUT_WR)


def _sized_sink(conn: socket.socket) -> None:
    head = b""
    while len(head) < 8:
        part = conn.recv(8 - len(head))
        if not part:
            return
        head += part
    left = int.from_bytes(head, "big")
    digest = hashlib.sha256()
    count = 0
    buf = bytearray(BUF)
    view = memoryview(buf)
    while count < left:
        n = conn.recv_into(view[:min(BUF, left - count)])
        if not n:
            break
        digest.update(view[:n])
        count += n
    conn.sendall(f"{count} {digest.hexdigest()}\n".encode())


def _silent(conn: socket.socket) -> None:
    while conn.recv(BUF):
        pass


SERVICES = {b"E": _echo, b"S": _sink, b"N": _sized_sink, b"Z": _silent}


def _serve(conn: socket.socket) -> None:
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        kind = conn.recv(1)
        handler = SERVICES.get(kind)
        if handler is not None:
            handler(conn)
    except OSError:
        pass
    finally:
        conn.close()


def _listen(port: int) -> socket.socket:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    return listener


def _rank_main(listener: socket.socket, rank: int, local_rank: int, marker_dir: Path | None) -> None:
    """Register this process as `rank` (marker) and serve forever."""
    marker_path = None
    if marker_dir is not None:
        from dbgfwd.rank import markers

        marker = markers.new_marker(rank, local_rank, listener.getsockname()[1], "127.0.0.1", None, "test",
                                    [os.path.abspath(__file__)])  # what it runs, as dbgfwd-rank records it
        marker_path = markers.write_marker(marker, marker_dir)

    def stop(signum, frame):
        if marker_path is not None:
            try:
                os.unlink(marker_path)
            except OSError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return listener


ACCEPT_LOG: Path | None = None


def _accept_forever(listener: socket.socket) -> None:
    while True:
        conn, peer = listener.accept()
        if ACCEPT_LOG is not None:  # one line per connection: tests count who connected, and when
            fd = os.open(ACCEPT_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(fd, f"{time.monotonic():.6f} {peer[1]}\n".encode())
            os.close(fd)
        threading.Thread(target=_serve, args=(conn,), daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--local-rank", type=int, default=None)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--marker-dir", type=Path, default=None, help="write a rank marker here (none if omitted)")
    p.add_argument("--accept-log", type=Path, default=None, help="append a line per accepted connection")
    args = p.parse_args(argv)
    global ACCEPT_LOG
    ACCEPT_LOG = args.accept_log
    if args.marker_dir is not None:
        import dbgfwd.rank.markers  # noqa: F401  (once, before any fork)

    if args.count == 1:
        listener = _listen(args.port)
        listened = time.monotonic()  # CLOCK_MONOTONIC: comparable with the parent's (reconnect timing)
        _rank_main(listener, args.rank, args.rank if args.local_rank is None else args.local_rank, args.marker_dir)
        sys.stdout.write(f"ready {listener.getsockname()[1]} t={listened:.6f}\n")
        sys.stdout.flush()
        _accept_forever(listener)
        return

    listeners = [_listen(args.port + i if args.port else 0) for i in range(args.count)]
    ports = [s.getsockname()[1] for s in listeners]
    ready_r, ready_w = os.pipe()
    children = []
    for i, listener in enumerate(listeners):
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            for other in listeners:
                if other is not listener:
                    other.close()
            _rank_main(listener, args.rank + i, i, args.marker_dir)
            os.write(ready_w, b"x")
            os.close(ready_w)
            _accept_forever(listener)
            os._exit(0)
        children.append(pid)
        listener.close()
    os.close(ready_w)
    got = 0
    while got < args.count:
        chunk = os.read(ready_r, 4096)
        if not chunk:
            break
        got += len(chunk)

    def stop(signum, frame):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write("ready " + " ".join(map(str, ports)) + "\n")
    sys.stdout.flush()
    while True:
        signal.pause()


class EchoServer:
    """A running echo_server.py process (or group, with count > 1)."""

    def __init__(self, proc, ports: list[int], listened: float | None = None):
        self.proc = proc
        self.ports = ports
        self.listened = listened  # time.monotonic() when it started listening (single server)

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def start(cls, port: int = 0, rank: int = 0, marker_dir: Path | None = None, count: int = 1,
              local_rank: int | None = None, timeout: float = 60.0,
              accept_log: Path | None = None, cmd_prefix: list[str] | None = None) -> "EchoServer":
        """`cmd_prefix` (nsenter ... --) runs it on a test host; `marker_dir` is then as the host sees it."""
        import subprocess

        cmd = [*(cmd_prefix or []), sys.executable, "-S", __file__, "--port", str(port), "--rank", str(rank), "--count", str(count)]
        if local_rank is not None:
            cmd += ["--local-rank", str(local_rank)]
        if marker_dir is not None:
            cmd += ["--marker-dir", str(marker_dir)]
        if accept_log is not None:
            cmd += ["--accept-log", str(accept_log)]
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, start_new_session=True)
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                proc.kill()
                raise RuntimeError(f"echo server did not start within {timeout}s")
        line = proc.stdout.readline().decode()
        if not line.startswith("ready"):
            proc.kill()
            raise RuntimeError(f"echo server failed to start: {line!r}")
        words = line.split()[1:]
        listened = next((float(w[2:]) for w in words if w.startswith("t=")), None)
        return cls(proc, [int(w) for w in words if w.isdigit()], listened)

    def kill(self) -> None:
        """SIGKILL, as a crash: no marker cleanup, connections reset by the kernel."""
        import subprocess

        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.proc.stdout.close()

    def stop(self) -> None:
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


if __name__ == "__main__":
    main()
