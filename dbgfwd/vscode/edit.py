"""Span-based editing of JSONC lists: replace the entries dbgfwd owns, keep every other byte.

The editor touches only (a) the owned elements of a root-level list, their separating commas and
the lines they emptied, and (b) one inserted block in the list's own layout (indent unit, line
ending). Comments, the user's entries, key order and blank lines are never rewritten, so running
it twice is a no-op and removing every owned entry leaves the user's text as it was.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from json.encoder import encode_basestring as _encode_str  # C, as json.dumps uses it
from typing import Any, Callable, Sequence

from dbgfwd.vscode.jsonc import JsoncError, Node, parse, position

DEFAULT_INDENT = "    "  # what VS Code writes into a new launch.json
_LINE = re.compile(r"[^\r\n]*(\r\n|\r|\n|$)")


@dataclass(frozen=True)
class ListUpdate:
    """The wanted owned entries of the root-level list `key`; `owned` recognises ours."""

    key: str
    wanted: Sequence[Any]
    owned: Callable[[Any], bool]


def detect_eol(text: str) -> str:
    m = re.search(r"\r\n|\r|\n", text)
    return m.group() if m else "\n"


def line_start(text: str, offset: int) -> int:
    return max(text.rfind("\n", 0, offset), text.rfind("\r", 0, offset)) + 1


def line_indent(text: str, offset: int) -> str:
    start = line_start(text, offset)
    m = re.match(r"[ \t]*", text[start:])
    return m.group() if m else ""


def starts_line(text: str, offset: int) -> bool:
    return text[line_start(text, offset):offset].strip(" \t") == ""


def detect_unit(text: str, root: Node) -> str:
    """The document's indent step, read from its first indented member or element."""
    base = line_indent(text, root.start)
    for node, start in _first_children(root):
        if starts_line(text, start):
            indent = line_indent(text, start)
            if indent.startswith(base) and len(indent) > len(base):
                return indent[len(base):]
        if node.kind in ("object", "array"):
            return detect_unit(text, node)
    return DEFAULT_INDENT


def _first_children(node: Node):
    if node.kind == "object":
        return list(zip(node.items, node.key_starts))[:1]
    if node.kind == "array":
        return [(n, n.start) for n in node.items[:1]]
    return []


def render(value: Any, indent: str, unit: str, eol: str) -> str:
    """`value` as JSON laid out like the document: continuation lines start with `indent`. The same text as
    `json.dumps(value, indent=unit, ensure_ascii=False)` with its line breaks made `eol + indent`; json's own
    indented output is produced in pure Python, one generator step per value, and was half of writing
    launch.json for 1024 ranks: the plain values dbgfwd writes are laid out here, anything else by json."""
    try:
        return _layout(value, eol + indent, unit)
    except (_Unusual, RecursionError):
        return json.dumps(value, indent=unit, ensure_ascii=False).replace("\n", eol + indent)


class _Unusual(Exception):
    """A value json.dumps would write differently from _layout (or refuse)."""


def _layout(value: Any, newline: str, unit: str) -> str:
    parts: list[str] = []
    append = parts.append

    def emit(v: Any, pad: str) -> None:
        kind = type(v)
        if kind is str:
            append(_encode_str(v))
        elif kind is dict or kind is list or kind is tuple:
            if not v:
                append("{}" if kind is dict else "[]")
                return
            inner = pad + unit
            append("{" if kind is dict else "[")
            first = True
            for item in (v.items() if kind is dict else v):
                append(inner if first else "," + inner)
                first = False
                if kind is dict:
                    key, item = item
                    if type(key) is not str:
                        raise _Unusual
                    append(_encode_str(key))
                    append(": ")
                emit(item, inner)
            append(pad + ("}" if kind is dict else "]"))
        elif v is None:
            append("null")
        elif v is True:
            append("true")
        elif v is False:
            append("false")
        elif kind is int:
            append(int.__repr__(v))
        elif kind is float and v == v and v not in (float("inf"), float("-inf")):
            append(float.__repr__(v))
        else:
            raise _Unusual

    emit(value, newline)
    return "".join(parts)


def render_document(value: Any, unit: str = DEFAULT_INDENT, eol: str = "\n") -> str:
    return render(value, "", unit, eol) + eol


class _Splice:
    """Deletions (a mask over the text) plus insertions, applied in one pass."""

    def __init__(self, text: str):
        self.text = text
        self.mask = bytearray(len(text))
        self.inserts: list[tuple[int, int, str]] = []

    def delete(self, start: int, end: int) -> None:
        self.mask[start:end] = b"\x01" * (end - start)

    def insert(self, at: int, text: str) -> None:
        self.inserts.append((at, len(self.inserts), text))

    @property
    def empty(self) -> bool:
        return not self.inserts and not any(self.mask)

    def _tidy_lines(self) -> None:
        """Drop lines a deletion left blank; trim whitespace a deletion left at a line's end."""
        text, mask = self.text, self.mask
        at_line_start = True  # does the output so far end with a line break?
        for m in _LINE.finditer(text):
            ls, le = m.start(), m.end()
            if ls == le:
                continue
            ce = le - len(m.group(1))
            kept = [i for i in range(ls, ce) if not mask[i]]
            if any(mask[ls:le]):
                if all(text[i] in " \t" for i in kept):
                    # A line that began in the output drops whole; one joined onto the line above
                    # (its break was deleted) keeps its own break to end that line.
                    self.delete(ls, le if at_line_start else ce)
                    kept = []
                elif text[kept[-1]] in " \t" and any(mask[kept[-1] + 1:ce]):
                    i = kept[-1]
                    while i >= ls and (mask[i] or text[i] in " \t"):
                        mask[i] = 1
                        i -= 1
            if ce < le and not mask[ce]:
                at_line_start = True
            elif kept:
                at_line_start = False

    def _join_gaps(self) -> None:
        """Whitespace (line breaks too) between two deleted pieces goes with them."""
        text, mask = self.text, self.mask
        i, n = 0, len(text)
        while i < n:
            if mask[i] or text[i] not in " \t\r\n" or i == 0 or not mask[i - 1]:
                i += 1
                continue
            j = i
            while j < n and not mask[j] and text[j] in " \t\r\n":
                j += 1
            if j < n and mask[j]:
                self.delete(i, j)
            i = j

    def result(self) -> str:
        self._join_gaps()
        self._tidy_lines()
        text, mask = self.text, self.mask
        out: list[str] = []
        cursor = 0
        for at, _, piece in sorted(self.inserts):
            out.append(_kept(text, mask, cursor, at))
            out.append(piece)
            cursor = at
        out.append(_kept(text, mask, cursor, len(text)))
        return "".join(out)


def _kept(text: str, mask: bytearray, start: int, end: int) -> str:
    return "".join(text[i] for i in range(start, end) if not mask[i])


def _bad_shape(text: str, node: Node, problem: str) -> JsoncError:
    line, col = position(text, node.start)
    return JsoncError(problem, line, col, node.start)


def _plan_list(sp: _Splice, text: str, arr: Node, update: ListUpdate, unit: str, eol: str) -> None:
    items = arr.items
    owned = [update.owned(n.value) for n in items]
    current = [n.value for n, mine in zip(items, owned) if mine]
    if current == list(update.wanted):
        return
    first_owned = owned.index(True) if any(owned) else len(items)
    n = len(items)
    # Delete owned elements run by run, with the commas that made them list members.
    deleted_commas: set[int] = set()
    i = 0
    while i < n:
        if not owned[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and owned[j + 1]:
            j += 1
        for k in range(i, j + 1):
            sp.delete(items[k].start, items[k].end)
        if j + 1 < n:  # the user's element after ours: the commas after ours go
            commas = arr.commas[i:j + 1]
        elif i > 0 and j < len(arr.commas) and arr.commas[j] is not None:
            # ours end a list written with a trailing comma: the commas after ours go, and the comma after
            # the user's element (theirs: they write trailing commas) stays where it was
            commas = arr.commas[i:j + 1]
        elif i > 0:  # ours end the list: the comma before ours goes
            commas = arr.commas[i - 1:j]
        else:  # ours were all there was
            commas = arr.commas[i:j + 1]
        for c in commas:
            if c is not None:
                sp.delete(c, c + 1)
                deleted_commas.add(c)
        i = j + 1
    kept = [k for k in range(n) if not owned[k]]
    indent = _element_indent(text, arr, kept, owned, unit)
    wanted = list(update.wanted)
    if not wanted:
        if not kept and not _has_comment(text, arr):
            sp.delete(arr.open_end, arr.close)
        return
    blocks = [render(v, indent, unit, eol) for v in wanted]
    before = [k for k in kept if k < first_owned]
    after = [k for k in kept if k > first_owned]
    if before and _comment_after(sp, text, arr, before[-1], kept, blocks, indent, eol, deleted_commas):
        pass  # the user's `// comment` after their element stays on its line (before ours)
    elif before:  # right after the user's element preceding ours
        sp.insert(items[before[-1]].end, "".join("," + eol + indent + b for b in blocks))
    elif after:  # ours came first: put the block where the first of ours started
        at = items[first_owned].start
        if starts_line(text, at):
            sp.insert(line_start(text, at), "".join(indent + b + "," + eol for b in blocks))
        else:
            sp.insert(at, "".join(b + ", " for b in blocks))
    elif starts_line(text, arr.close):
        sp.insert(line_start(text, arr.close), ("," + eol).join(indent + b for b in blocks) + eol)
    else:
        closing = line_indent(text, arr.start)
        sp.insert(arr.close, "".join(eol + indent + b if k == 0 else "," + eol + indent + b
                                     for k, b in enumerate(blocks)) + eol + closing)


def _comment_after(sp: _Splice, text: str, arr: Node, k: int, kept: list[int], blocks: list[str], indent: str,
                   eol: str, deleted_commas: set[int]) -> bool:
    """Insert `blocks` after the user's element `k` when a line comment follows it on its line
    (`} // my last one`): the separating comma goes before the comment, ours after the end of that line, so
    the comment stays with the element it was written for. False when there is no such comment."""
    end = arr.items[k].end
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    rest = text[end:line_end].rstrip("\r")
    m = re.match(r"[ \t]*(,?)[ \t]*//", rest)
    if not m:
        return False
    comma = arr.commas[k] if k < len(arr.commas) else None
    # A comma after the element survives unless it goes with dbgfwd's entries that followed it.
    survives = comma is not None and comma not in deleted_commas
    if comma is not None and comma >= line_end:
        return False  # a comma on a later line: an unusual layout, left to the plain insertion
    if not survives:
        sp.insert(end, ",")
    more_after = any(x > k for x in kept)
    # A user who ends the list with a trailing comma (`}, // my last one`) gets one after ours as well: the list
    # keeps their style, and taking ours out again leaves their comma as it was.
    trailing = survives and not more_after
    sp.insert(end + len(rest), "".join(eol + indent + b + ("," if i < len(blocks) - 1 or more_after or trailing
                                                           else "") for i, b in enumerate(blocks)))
    return True


def _has_comment(text: str, arr: Node) -> bool:
    pieces, cursor = [], arr.open_end
    for item in arr.items:
        pieces.append(text[cursor:item.start])
        cursor = item.end
    pieces.append(text[cursor:arr.close])
    return any("/" in p for p in pieces)


def _element_indent(text: str, arr: Node, kept: list[int], owned: list[bool], unit: str) -> str:
    order = kept + [k for k, o in enumerate(owned) if o]
    for k in order:
        if starts_line(text, arr.items[k].start):
            return line_indent(text, arr.items[k].start)
    return line_indent(text, arr.start) + unit


def _add_members(sp: _Splice, text: str, root: Node, members: list[tuple[str, Any]], unit: str,
                 eol: str) -> None:
    indent = None
    for start in root.key_starts:
        if starts_line(text, start):
            indent = line_indent(text, start)
            break
    if indent is None:
        indent = line_indent(text, root.start) + unit
    blocks = [json.dumps(k, ensure_ascii=False) + ": " + render(v, indent, unit, eol) for k, v in members]
    if root.items:
        sp.insert(root.items[-1].end, "".join("," + eol + indent + b for b in blocks))
    elif starts_line(text, root.close):
        sp.insert(line_start(text, root.close), ("," + eol).join(indent + b for b in blocks) + eol)
    else:
        closing = line_indent(text, root.start)
        sp.insert(root.close, eol + ("," + eol).join(indent + b for b in blocks) + eol + closing)


def merge_lists(text: str, updates: Sequence[ListUpdate]) -> str:
    """`text` with each update's root-level list holding exactly its wanted owned entries.

    Raises JsoncError (with line and column) when `text` is not JSONC or has the wrong shape.
    """
    root = parse(text)
    if root.kind != "object":
        raise _bad_shape(text, root, "the document is not a JSON object")
    eol, unit = detect_eol(text), detect_unit(text, root)
    sp = _Splice(text)
    missing: list[tuple[str, Any]] = []
    for update in updates:
        if root.member_count(update.key) > 1:
            raise _bad_shape(text, root.member(update.key), f'"{update.key}" appears more than once')
        node = root.member(update.key)
        if node is None:
            if update.wanted:
                missing.append((update.key, list(update.wanted)))
            continue
        if node.kind != "array":
            raise _bad_shape(text, node, f'"{update.key}" is not a list')
        _plan_list(sp, text, node, update, unit, eol)
    if missing:
        _add_members(sp, text, root, missing, unit, eol)
    return text if sp.empty else sp.result()
