import socket
import threading

import pytest

from tests.support.batch_world import BatchWorld, moto_server, set_env
from tests.support.net import splice


@pytest.fixture(scope="session")
def moto_url():
    with moto_server() as url:
        yield url


@pytest.fixture
def world(monkeypatch, moto_url):
    with BatchWorld(moto_url) as w:
        set_env(monkeypatch, w)
        w.tolerate_seq_reuse = False  # dbgfwd's own client never reuses a sequence number
        yield w
        assert w.fake.internal_errors == []  # every request the fake saw had a modelled answer
        if not w.tolerate_seq_reuse:
            assert w.agent.seq_conflicts == []


def bridge(provider, target, port: int) -> tuple[int, threading.Event]:
    """A one-client local listener pumping into provider.open_stream (what the engine does)."""
    srv = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def run():
        conn, _ = srv.accept()
        srv.close()
        stream = provider.open_stream(target, port, 20)
        a = threading.Thread(target=splice, args=(conn, stream), daemon=True)
        b = threading.Thread(target=splice, args=(stream, conn), daemon=True)
        a.start(), b.start()
        a.join(), b.join()
        conn.close(), stream.close()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1], done
