"""AgentMessage: the binary frame of the SSM data channel (see shared/PROTOCOLS.md).

Big-endian header, 120 bytes before the payload:
HeaderLength u32 (=116) | MessageType 32s space-padded | SchemaVersion u32 | CreatedDate u64 ms |
SequenceNumber i64 | Flags u64 | MessageId 16s (UUID halves swapped) | PayloadDigest 32s (SHA-256) |
PayloadType u32 | PayloadLength u32 | Payload
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
import uuid
from dataclasses import dataclass, field

from dbgfwd.net.wsframes import random_bytes

_HEADER = struct.Struct(">I32sIQqQ16s32sII")
HEADER_LENGTH = 116  # everything before PayloadLength; the payload starts at HEADER_LENGTH + 4
SCHEMA_VERSION = 1

# MessageType values
INPUT = "input_stream_data"
OUTPUT = "output_stream_data"
ACK = "acknowledge"
CHANNEL_CLOSED = "channel_closed"
START_PUBLICATION = "start_publication"
PAUSE_PUBLICATION = "pause_publication"

# PayloadType values
PT_OUTPUT = 1
PT_ERROR = 2
PT_SIZE = 3
PT_PARAMETER = 4
PT_HANDSHAKE_REQUEST = 5
PT_HANDSHAKE_RESPONSE = 6
PT_HANDSHAKE_COMPLETE = 7
PT_FLAG = 10
PT_STDERR = 11
PT_EXIT_CODE = 12

# Flag payload values (u32 big-endian)
FLAG_DISCONNECT_TO_PORT = 1
FLAG_TERMINATE_SESSION = 2
FLAG_CONNECT_TO_PORT_ERROR = 3

# Flags header bits
SYN = 1
FIN = 2


class MessageError(Exception):
    """A frame that is not a valid AgentMessage (short, bad length, bad digest)."""


def _encode_id(mid: uuid.UUID) -> bytes:
    raw = mid.bytes
    return raw[8:] + raw[:8]


def _decode_id(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes=raw[8:] + raw[:8])


@dataclass(frozen=True)
class AgentMessage:
    message_type: str
    sequence: int
    payload_type: int
    payload: bytes = b""
    flags: int = 0
    message_id: uuid.UUID = field(default_factory=lambda: uuid.UUID(bytes=random_bytes(16), version=4))
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    schema_version: int = SCHEMA_VERSION

    def encode(self) -> bytes:
        header = _HEADER.pack(
            HEADER_LENGTH, self.message_type.encode().ljust(32), self.schema_version, self.created_ms,
            self.sequence, self.flags, _encode_id(self.message_id), hashlib.sha256(self.payload).digest(),
            self.payload_type, len(self.payload))
        return header + self.payload

    @classmethod
    def decode(cls, data: bytes) -> "AgentMessage":
        if len(data) < _HEADER.size:
            raise MessageError(f"message of {len(data)} bytes is shorter than the {_HEADER.size}-byte header")
        (hlen, mtype, schema, created, seq, flags, mid, digest, ptype,
         plen) = _HEADER.unpack_from(data)
        if hlen != HEADER_LENGTH:
            raise MessageError(f"header length {hlen}, expected {HEADER_LENGTH}")
        payload = bytes(data[HEADER_LENGTH + 4:])
        if len(payload) != plen:
            raise MessageError(f"payload length field {plen} but {len(payload)} bytes follow")
        if hashlib.sha256(payload).digest() != digest:
            raise MessageError("payload digest mismatch")
        return cls(message_type=mtype.decode("ascii", "replace").strip(" \x00"), sequence=seq,
                   payload_type=ptype, payload=payload, flags=flags, message_id=_decode_id(mid),
                   created_ms=created, schema_version=schema)

    def json(self) -> dict:
        return json.loads(self.payload.decode("utf-8"))


def ack_for(msg: AgentMessage) -> AgentMessage:
    """The acknowledge message for a received stream-data message."""
    body = {
        "AcknowledgedMessageType": msg.message_type,
        "AcknowledgedMessageId": str(msg.message_id),
        "AcknowledgedMessageSequenceNumber": msg.sequence,
        "IsSequentialMessage": True,
    }
    return AgentMessage(ACK, 0, 0, json.dumps(body).encode(), flags=SYN | FIN)


def open_message(token: str, client_id: str, client_version: str) -> str:
    """The first (TEXT) websocket message of a data channel; carries the session token."""
    return json.dumps({
        "MessageSchemaVersion": "1.0",
        "RequestId": str(uuid.uuid4()),
        "TokenValue": token,
        "ClientId": client_id,
        "ClientVersion": client_version,
    })


def version_tuple(text: str) -> tuple[int, ...]:
    """'3.0.196.0' -> (3, 0, 196, 0); unparsable pieces count as 0."""
    out = []
    for piece in str(text).split("."):
        try:
            out.append(int(piece))
        except ValueError:
            out.append(0)
    return tuple(out)
