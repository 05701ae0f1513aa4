#!/usr/bin/env python3
"""Stand-in for the session-manager-plugin binary (not installable in CI), for `--ssm-backend plugin`.

Checks its argv exactly as the real plugin is invoked (shared/PROTOCOLS.md):
  session-manager-plugin '<json {SessionId,TokenValue,StreamUrl}>' <region> StartSession <profile or "">
                         '<json start_session kwargs incl. Target>' <ssm endpoint url>
then listens on Parameters.localPortNumber, prints "Waiting for connections...", and carries each
connection over the session's data channel (with dbgfwd's native client: the point here is the
process contract, not a second implementation of the channel).
"""

import json
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def fail(text: str) -> None:
    print(f"fake-plugin: {text}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    if len(sys.argv) != 7:
        fail(f"expected 6 arguments, got {len(sys.argv) - 1}")
    session, region, op, _profile, request, endpoint = sys.argv[1:]
    session, request = json.loads(session), json.loads(request)
    if set(session) != {"SessionId", "TokenValue", "StreamUrl"} or op != "StartSession" or not region:
        fail("bad session json / operation / region")
    if not request.get("Target") or not endpoint.startswith("http"):
        fail("bad request json / endpoint")
    local_port = int(request["Parameters"]["localPortNumber"][0])

    from dbgfwd.providers.batch.ssm.channel import DataChannel
    from dbgfwd.providers.batch.ssm.smux import SmuxClient

    channel = None
    mux = SmuxClient(lambda data: channel.send_output(data))
    channel = DataChannel(session["StreamUrl"], session["TokenValue"], on_output=mux.feed)
    channel.start()
    channel.wait_handshake(10)
    srv = socket.create_server(("127.0.0.1", local_port))
    print(f"Port {local_port} opened for sessionId {session['SessionId']}.", flush=True)
    print("Waiting for connections...", flush=True)

    def pump(a, b):
        try:
            while (d := a.recv(65536)):
                b.sendall(d)
        except OSError:
            pass
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    while True:
        conn, _ = srv.accept()
        stream = mux.open()
        threading.Thread(target=pump, args=(conn, stream), daemon=True).start()
        threading.Thread(target=pump, args=(stream, conn), daemon=True).start()


if __name__ == "__main__":
    main()
