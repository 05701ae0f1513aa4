"""A JSONC reader that keeps every node's position, so edits can splice the original text.

JSONC as VS Code reads launch.json/tasks.json: JSON plus `//` and `/* */` comments and trailing
commas in objects and arrays. No library on PyPI both parses this and reports source spans without
rewriting the document, so this small recursive-descent parser records, for each value, where it
starts and ends, and for each array element or object member, where its separating comma sits.
Everything the editor does not touch is therefore kept byte for byte.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERALS = {"true": True, "false": False, "null": None}
_WS = " \t\r\n\ufeff"
_PLAIN_STRING = re.compile(r'"([^"\\\r\n]*)"')  # a string without escapes or line breaks


class JsoncError(Exception):
    """The text is not JSONC. `line` and `column` are 1-based (column counts characters)."""

    def __init__(self, problem: str, line: int, column: int, offset: int):
        super().__init__(f"{line}:{column}: {problem}")
        self.problem, self.line, self.column, self.offset = problem, line, column, offset


@dataclass
class Node:
    """One JSON value at text[start:end]."""

    kind: str  # "object", "array", "string", "number", "literal"
    start: int
    end: int
    value: Any = None  # the plain Python value (objects: dict with last-duplicate-wins)
    # arrays: the element nodes; objects: the member value nodes.
    items: list["Node"] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # objects: member keys, same order as items
    key_starts: list[int] = field(default_factory=list)  # objects: where each member's key starts
    commas: list[int | None] = field(default_factory=list)  # offset of the comma after each item

    @property
    def open_end(self) -> int:
        """Offset just after the opening bracket/brace."""
        return self.start + 1

    @property
    def close(self) -> int:
        """Offset of the closing bracket/brace."""
        return self.end - 1

    def member(self, key: str) -> "Node | None":
        """The value of the last member named `key` (JSON's last-one-wins), or None."""
        for k, node in zip(reversed(self.keys), reversed(self.items)):
            if k == key:
                return node
        return None

    def member_count(self, key: str) -> int:
        return self.keys.count(key)


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of `offset`; CRLF, LF and lone CR each end one line."""
    before = text[:offset]
    line = before.replace("\r\n", "\n").replace("\r", "\n").count("\n") + 1
    last_break = max(before.rfind("\n"), before.rfind("\r"))
    return line, offset - last_break


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def fail(self, problem: str, at: int | None = None) -> JsoncError:
        at = self.pos if at is None else at
        line, col = position(self.text, at)
        return JsoncError(problem, line, col, at)

    def skip_trivia(self) -> None:
        text, n = self.text, len(self.text)
        while self.pos < n:
            ch = text[self.pos]
            if ch in _WS:
                self.pos += 1
            elif text.startswith("//", self.pos):
                ends = [p for p in (text.find("\n", self.pos), text.find("\r", self.pos)) if p != -1]
                self.pos = min(ends) if ends else n
            elif text.startswith("/*", self.pos):
                close = text.find("*/", self.pos + 2)
                if close == -1:
                    raise self.fail("block comment is never closed")
                self.pos = close + 2
            else:
                return

    def describe(self) -> str:
        if self.pos >= len(self.text):
            return "end of file"
        return repr(self.text[self.pos])

    def value(self, depth: int = 0) -> Node:
        if depth > 200:
            raise self.fail("nesting is too deep")
        self.skip_trivia()
        if self.pos >= len(self.text):
            raise self.fail("expected a value but the file ends")
        ch = self.text[self.pos]
        if ch == "{":
            return self.obj(depth)
        if ch == "[":
            return self.array(depth)
        if ch == '"':
            return self.string()
        m = _NUMBER.match(self.text, self.pos)
        if m and m.end() > self.pos:
            start, self.pos = self.pos, m.end()
            return Node("number", start, self.pos, json.loads(m.group()))
        for word, val in _LITERALS.items():
            if self.text.startswith(word, self.pos):
                start = self.pos
                self.pos += len(word)
                return Node("literal", start, self.pos, val)
        raise self.fail(f"expected a value, found {self.describe()}")

    def string(self) -> Node:
        text, start = self.text, self.pos
        m = _PLAIN_STRING.match(text, start)
        if m:  # the common case, in one step (a 1024-rank launch.json has ~90k strings): no escapes to decode
            self.pos = m.end()
            return Node("string", start, self.pos, m.group(1))
        i = start + 1
        while True:
            if i >= len(text):
                raise self.fail("string is never closed", start)
            ch = text[i]
            if ch == '"':
                break
            if ch in "\r\n":
                raise self.fail("line break inside a string", i)
            i += 2 if ch == "\\" else 1
        self.pos = i + 1
        raw = text[start:self.pos]
        try:
            val = json.loads(raw, strict=False)
        except ValueError:
            raise self.fail("invalid escape in string", start) from None
        return Node("string", start, self.pos, val)

    def _expect_separator(self, close: str, what: str) -> int | None:
        """After an item: return the comma's offset, or None when `close` follows."""
        self.skip_trivia()
        if self.pos < len(self.text) and self.text[self.pos] == ",":
            self.pos += 1
            return self.pos - 1
        if self.pos < len(self.text) and self.text[self.pos] == close:
            return None
        raise self.fail(f"expected ',' or '{close}' after {what}, found {self.describe()}")

    def array(self, depth: int) -> Node:
        node = Node("array", self.pos, -1, [])
        self.pos += 1
        while True:
            self.skip_trivia()
            if self.pos < len(self.text) and self.text[self.pos] == "]":
                self.pos += 1
                node.end = self.pos
                return node
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                raise self.fail("unexpected ',' (missing value)")
            item = self.value(depth + 1)
            node.items.append(item)
            node.value.append(item.value)
            node.commas.append(self._expect_separator("]", "an array element"))

    def obj(self, depth: int) -> Node:
        node = Node("object", self.pos, -1, {})
        self.pos += 1
        while True:
            self.skip_trivia()
            if self.pos < len(self.text) and self.text[self.pos] == "}":
                self.pos += 1
                node.end = self.pos
                return node
            if self.pos >= len(self.text) or self.text[self.pos] != '"':
                raise self.fail(f"expected a property name in double quotes, found {self.describe()}")
            key = self.string()
            self.skip_trivia()
            if self.pos >= len(self.text) or self.text[self.pos] != ":":
                raise self.fail(f"expected ':' after property name, found {self.describe()}")
            self.pos += 1
            item = self.value(depth + 1)
            node.keys.append(key.value)
            node.key_starts.append(key.start)
            node.items.append(item)
            node.value[key.value] = item.value
            node.commas.append(self._expect_separator("}", "a property"))


def parse(text: str) -> Node:
    """Parse a whole JSONC document. Raises JsoncError with the line and column of the problem."""
    p = _Parser(text)
    root = p.value()
    p.skip_trivia()
    if p.pos != len(text):
        raise p.fail(f"unexpected {p.describe()} after the end of the document")
    return root


def loads(text: str) -> Any:
    return parse(text).value
