"""AgentMessage encode/parse for the test SSM agent, written from shared/PROTOCOLS.md independently
of dbgfwd's codec (field by field, no shared struct format), so each checks the other."""

from __future__ import annotations

import hashlib
import struct
import time
import uuid


def _pack(mtype: str, seq: int, ptype: int, payload: bytes, flags: int = 0) -> tuple[bytes, str]:
    mid = uuid.uuid4()
    raw = mid.bytes
    head = (struct.pack(">I", 116) + mtype.encode().ljust(32) + struct.pack(">I", 1)
            + struct.pack(">Q", int(time.time() * 1000)) + struct.pack(">q", seq) + struct.pack(">Q", flags)
            + raw[8:] + raw[:8] + hashlib.sha256(payload).digest() + struct.pack(">I", ptype)
            + struct.pack(">I", len(payload)))
    return head + payload, str(mid)


class _Parsed:
    __slots__ = ("mtype", "seq", "flags", "mid", "digest", "ptype", "payload")


def _parse(data: bytes) -> _Parsed:
    if len(data) < 120:
        raise ValueError(f"message of {len(data)} bytes shorter than its header")
    if int.from_bytes(data[0:4], "big") != 116:
        raise ValueError("HeaderLength is not 116")
    raw_type = data[4:36]
    name = raw_type.decode("ascii", "replace").rstrip(" ")
    if raw_type != name.encode().ljust(32):
        raise ValueError(f"MessageType {raw_type!r} is not space-padded")
    if int.from_bytes(data[36:40], "big") != 1:
        raise ValueError("SchemaVersion is not 1")
    p = _Parsed()
    p.mtype = name
    p.seq = int.from_bytes(data[48:56], "big", signed=True)
    p.flags = int.from_bytes(data[56:64], "big")
    mid = data[64:80]
    p.mid = str(uuid.UUID(bytes=mid[8:] + mid[:8]))
    p.digest = data[80:112]
    p.ptype = int.from_bytes(data[112:116], "big")
    plen = int.from_bytes(data[116:120], "big")
    p.payload = data[120:]
    if plen != len(p.payload):
        raise ValueError(f"PayloadLength {plen} but {len(p.payload)} bytes")
    if hashlib.sha256(p.payload).digest() != p.digest:
        raise ValueError("PayloadDigest mismatch")
    return p
