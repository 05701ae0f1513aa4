"""Small helpers for the SSH provider tests: build a provider, bridge a Stream to a local port."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from dbgfwd.providers.base import ProviderConfig
from dbgfwd.providers.ssh import SshProvider
from tests.support.sshd import write_ssh_config


def make_provider(config_path: Path, *targets: str, rpn: int | None = None, **options) -> SshProvider:
    return SshProvider(ProviderConfig(targets=targets, options={"ssh_config": config_path, **options},
                                      ranks_per_node=rpn))


def config_with(lab, path: Path, aliases: dict) -> Path:
    """ssh config with the lab's hosts plus extra aliases: name -> (host, {option overrides})."""
    entries = {name: lab.ssh_options(host) for name, host in lab.hosts.items()}
    for alias, (host, extra) in aliases.items():
        entries[alias] = lab.ssh_options(host, **extra)
    return write_ssh_config(path, entries)


def bridge(stream) -> int:
    """A one-shot local listener (in the current network namespace) pumping to `stream`; its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def pump(src_recv, dst_send, done):
        try:
            while True:
                data = src_recv(65536)
                if not data:
                    break
                dst_send(data)
        except OSError:
            pass
        done()

    def serve():
        client, _ = server.accept()
        server.close()

        def close_both():
            for obj in (client, stream):
                try:
                    obj.close()
                except (OSError, EOFError):  # paramiko: the test's provider closed the transport first
                    pass
        threading.Thread(target=pump, args=(client.recv, stream.sendall, close_both), daemon=True).start()
        pump(stream.recv, client.sendall, close_both)

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


def eventually(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll until predicate() is truthy (bounded); returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s")
        time.sleep(0.1)


def established_ssh_sessions(host, port: int = 2222) -> int:
    """ESTABLISHED TCP connections to the host's sshd, read from its /proc/net/tcp."""
    text = host.run(["cat", "/proc/net/tcp"]).stdout
    count = 0
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) > 3 and parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) == port:
            count += 1
    return count
