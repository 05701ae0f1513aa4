"""Package data: the skeletons dbgfwd fills in (launch.json entries, the wait task, the in-code snippet).

Placeholders are `{{name}}`. A JSON string that is exactly one placeholder is replaced by the value
itself (a number, a list, a boolean); a placeholder inside a longer string is replaced by its text.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import timedelta
from importlib import resources
from typing import Any, Callable, Mapping

_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")


def read_text(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def substitute(text: str, values: Mapping[str, Any]) -> str:
    """Replace every `{{name}}` in `text` with str(values[name]); a missing name is a KeyError."""
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


def fill(obj: Any, values: Mapping[str, Any]) -> Any:
    """A copy of the JSON value `obj` with its placeholders replaced by `values`: a string that is one
    placeholder becomes the value itself (any JSON type), one holding placeholders gets str() of each."""
    return _compile(obj)(values)


@functools.lru_cache(maxsize=None)
def _parsed(name: str) -> Any:
    return json.loads(read_text(name))


def load_json(name: str, values: Mapping[str, Any]) -> Any:
    """The JSON template `name` filled with `values` (see fill). It is read, parsed and turned into the function
    that builds the filled copy once: launch.json for 1024 ranks fills it 1024 times."""
    return _filler(name)(values)


@functools.lru_cache(maxsize=None)
def _filler(name: str) -> Callable[[Mapping[str, Any]], Any]:
    return _compile(_parsed(name))


def _compile(obj: Any) -> Callable[[Mapping[str, Any]], Any]:
    """fill(obj, values) as a function of `values`: the placeholders are found once, not on every fill."""
    if isinstance(obj, dict):
        members = [(k, _compile(v)) for k, v in obj.items()]
        return lambda values: {k: make(values) for k, make in members}
    if isinstance(obj, list):
        items = [_compile(v) for v in obj]
        return lambda values: [make(values) for make in items]
    if isinstance(obj, str):
        whole = _PLACEHOLDER.fullmatch(obj)
        if whole:
            name = whole.group(1)
            return lambda values: values[name]
        pieces = _PLACEHOLDER.split(obj)  # text, name, text, name, ..., text
        if len(pieces) > 1:
            return lambda values: "".join(p if i % 2 == 0 else str(values[p]) for i, p in enumerate(pieces))
    return lambda values: obj  # a str without placeholders, a number, true, false, null: never changed


def render_snippet(base_port: int, wait_rank: int | None, collective_timeout: timedelta) -> str:
    """The in-code debugpy starter, reading ranks in the exact order of `dbgfwd.rank.env.SOURCES`."""
    from dbgfwd.rank.collectives import format_timeout
    from dbgfwd.rank.env import SOURCES

    rows = "".join(f"\n        {(s.name, s.rank, s.local_rank, s.world_size)!r}," for s in SOURCES)
    return substitute(read_text("snippet.py.tmpl"), {
        "sources": f"({rows}\n    )", "base_port": int(base_port),
        "wait_rank": "None" if wait_rank is None else int(wait_rank),
        "collective_seconds": int(collective_timeout.total_seconds()),
        "collective_timeout": format_timeout(collective_timeout),
    })
