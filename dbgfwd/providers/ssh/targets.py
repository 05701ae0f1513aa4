"""Which hosts: `[user@]host[:port]` arguments, MPI hostfiles and Slurm node lists.

Pure parsing, no SSH: everything here is property-tested (tests/providers/ssh/test_targets.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from dbgfwd.errors import BadFileError, UsageError

SLURM_NODELIST_ENV = "SLURM_JOB_NODELIST"

# What OpenSSH accepts as a host token, minus whitespace and the characters we split on.
_HOST_RE = re.compile(r"^[A-Za-z0-9_.%+\-]+$")
_SPEC_HINT = "write hosts as [user@]host[:port], e.g. alice@node03:2222"


@dataclass(frozen=True)
class HostSpec:
    """One SSH host as the user named it. `host` may be an alias from ssh config."""

    host: str
    user: str | None = None
    port: int | None = None
    slots: int | None = None  # ranks on this host, from a hostfile

    @property
    def key(self) -> str:
        """Stable identity: the spec as typed (without slots)."""
        text = f"{self.user}@" if self.user else ""
        text += f"[{self.host}]" if ":" in self.host else self.host
        return text + (f":{self.port}" if self.port else "")


def parse_host_spec(text: str) -> HostSpec:
    """'[user@]host[:port]' (IPv6 as '[::1]:22'). Raises UsageError naming the bad spec."""
    raw = text.strip()
    user = None
    rest = raw
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        if not user or any(c.isspace() for c in user):
            raise UsageError(f"bad host {text!r}: empty or malformed user before '@'", hint=_SPEC_HINT)
    port_text = None
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep or (tail and not tail.startswith(":")):
            raise UsageError(f"bad host {text!r}: unbalanced '[' in address", hint=_SPEC_HINT)
        port_text = tail[1:] if tail else None
        if not host or not re.fullmatch(r"[0-9A-Fa-f:.%a-zA-Z0-9]+", host):
            raise UsageError(f"bad host {text!r}: not an address inside [ ]", hint=_SPEC_HINT)
    else:
        host, sep, port_text = rest.partition(":")
        if not sep:
            port_text = None
        if not host or not _HOST_RE.match(host):
            raise UsageError(f"bad host {text!r}: {host!r} is not a host name", hint=_SPEC_HINT)
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise UsageError(f"bad host {text!r}: port {port_text!r} is not 1-65535", hint=_SPEC_HINT)
        port = int(port_text)
    return HostSpec(host=host, user=user, port=port)


def parse_hostfile(text: str, path: str | Path = "<hostfile>") -> list[HostSpec]:
    """An MPI hostfile: one host per line, `host slots=N` (Open MPI) or `host:N` (MPICH).

    `#` starts a comment; blank lines are ignored; `max_slots=` is accepted and ignored; a host listed
    twice gets the sum of its slots (Open MPI does the same). Hosts may be `user@host`. Errors are
    BadFileError with the line number.
    """
    order: list[str] = []
    specs: dict[str, HostSpec] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        fields = body.split()
        head, options = fields[0], fields[1:]
        slots = None
        if ":" in head and not head.startswith("["):
            head, _, count = head.rpartition(":")
            slots = _slot_count(count, path, lineno, f"{head}:{count}")
        try:
            spec = parse_host_spec(head)
        except UsageError as exc:
            raise BadFileError(path, exc.message, line=lineno,
                               hint="one host per line: host slots=N (or host:N)") from None
        for opt in options:
            key, sep, value = opt.partition("=")
            key = key.lower().replace("-", "_")
            if not sep:
                raise BadFileError(path, f"expected key=value after the host, got {opt!r}", line=lineno,
                                   hint="one host per line: host slots=N")
            if key in ("slots", "cpu", "cpus"):
                slots = _slot_count(value, path, lineno, opt)
            elif key == "max_slots":
                _slot_count(value, path, lineno, opt)
            else:
                raise BadFileError(path, f"unknown hostfile option {opt!r}", line=lineno,
                                   hint="supported: slots=N, max_slots=N")
        key = spec.key
        if key in specs:
            prev = specs[key]
            total = (prev.slots or 1) + (slots or 1) if (prev.slots or slots) else None
            specs[key] = HostSpec(spec.host, spec.user, spec.port, total)
        else:
            order.append(key)
            specs[key] = HostSpec(spec.host, spec.user, spec.port, slots)
    if not order:
        raise BadFileError(path, "no hosts in hostfile", hint="one host per line: host slots=N")
    return [specs[k] for k in order]


def _slot_count(value: str, path, lineno: int, piece: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise BadFileError(path, f"slot count in {piece!r} must be a positive integer", line=lineno)
    return int(value)


def expand_nodelist(text: str, source: str = "--nodelist") -> list[str]:
    """Expand a Slurm host list: 'node[01-04,07],gpu-a[1-2]' -> node01..node04, node07, gpu-a1, gpu-a2.

    Several bracket groups in one name expand as a product ('r[1-2]n[1-2]' -> r1n1 r1n2 r2n1 r2n2);
    zero padding follows the lower bound's width, as in Slurm. Duplicates are dropped (first kept).
    """
    hint = f"{source}: use Slurm syntax like node[01-04,07],gpu-a[1-2]"
    out: list[str] = []
    seen: set[str] = set()
    for name in _split_top_level(text, source, hint):
        for host in _expand_name(name, source, hint):
            if host not in seen:
                seen.add(host)
                out.append(host)
    if not out:
        raise UsageError(f"{source} {text!r} names no hosts", hint=hint)
    return out


def _split_top_level(text: str, source: str, hint: str) -> list[str]:
    pieces, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
            if depth > 1:
                raise UsageError(f"{source} {text!r}: nested '[' at position {i + 1}", hint=hint)
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise UsageError(f"{source} {text!r}: unmatched ']' at position {i + 1}", hint=hint)
        elif ch == "," and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    if depth:
        raise UsageError(f"{source} {text!r}: unclosed '['", hint=hint)
    pieces.append(text[start:])
    return [p.strip() for p in pieces if p.strip()]


def _expand_name(name: str, source: str, hint: str) -> Iterable[str]:
    match = re.match(r"^([^\[]*)\[([^\]]*)\](.*)$", name)
    if not match:
        if not _HOST_RE.match(name):
            raise UsageError(f"{source}: {name!r} is not a host name", hint=hint)
        yield name
        return
    prefix, body, suffix = match.groups()
    if prefix and not _HOST_RE.match(prefix):
        raise UsageError(f"{source}: {prefix!r} is not a host name prefix", hint=hint)
    for value in _expand_ranges(body, name, source, hint):
        yield from _expand_name(prefix + value + suffix, source, hint)


def _expand_ranges(body: str, name: str, source: str, hint: str) -> list[str]:
    values = []
    for piece in body.split(","):
        piece = piece.strip()
        lo, sep, hi = piece.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise UsageError(f"{source}: bad range {piece!r} in {name!r}", hint=hint)
        if not sep:
            values.append(lo)
            continue
        if int(hi) < int(lo):
            raise UsageError(f"{source}: range {piece!r} in {name!r} runs backwards", hint=hint)
        if int(hi) - int(lo) > 100_000:
            raise UsageError(f"{source}: range {piece!r} in {name!r} is too large", hint=hint)
        width = len(lo)
        values.extend(str(n).zfill(width) for n in range(int(lo), int(hi) + 1))
    return values
