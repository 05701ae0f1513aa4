"""AgentMessage codec and smux framing, checked against the test agent's independent parser."""

import uuid

import pytest

from dbgfwd.providers.batch.ssm import message as m
from dbgfwd.providers.batch.ssm.smux import FIN, PSH, SmuxClient, frame
from tests.support.ssm_wire import _pack, _parse


def test_roundtrip_and_independent_parse():
    mid = uuid.uuid4()
    msg = m.AgentMessage(m.INPUT, 42, m.PT_OUTPUT, b"hello", message_id=mid)
    data = msg.encode()
    assert len(data) == 120 + 5 and data[:4] == (116).to_bytes(4, "big")
    assert data[64:80] == mid.bytes[8:] + mid.bytes[:8]  # UUID halves swapped on the wire
    parsed = _parse(data)
    assert (parsed.mtype, parsed.seq, parsed.ptype, parsed.payload, parsed.mid) == (
        "input_stream_data", 42, 1, b"hello", str(mid))
    back = m.AgentMessage.decode(_pack("output_stream_data", 7, 1, b"x" * 1024)[0])
    assert (back.message_type, back.sequence, len(back.payload)) == ("output_stream_data", 7, 1024)


@pytest.mark.parametrize("damage", ["digest", "length", "header"])
def test_corrupt_messages_are_rejected(damage):
    data = bytearray(m.AgentMessage(m.OUTPUT, 1, 1, b"payload").encode())
    if damage == "digest":
        data[-1] ^= 0xFF
    elif damage == "length":
        data += b"extra"
    else:
        data[3] = 100
    with pytest.raises(m.MessageError):
        m.AgentMessage.decode(bytes(data))


def test_ack_names_the_message():
    msg = m.AgentMessage(m.OUTPUT, 9, 1, b"abc")
    body = m.ack_for(msg).json()
    assert body == {"AcknowledgedMessageType": "output_stream_data", "AcknowledgedMessageId": str(msg.message_id),
                    "AcknowledgedMessageSequenceNumber": 9, "IsSequentialMessage": True}


def test_smux_frames_split_anywhere_reach_the_stream():
    sent = []
    mux = SmuxClient(sent.append)
    sock = mux.open()
    sock.settimeout(5)
    assert sent[0] == bytes([1, 0, 0, 0, 3, 0, 0, 0])  # SYN, stream id 3
    wire = frame(PSH, 3, b"hello ") + frame(PSH, 3, b"world") + frame(FIN, 3)
    for i in range(len(wire)):  # one byte at a time
        mux.feed(wire[i:i + 1])
    got = b""
    while (chunk := sock.recv(100)):
        got += chunk
    assert got == b"hello world"
    sock.close()
    mux.close()
