"""Property: for any JSONC launch.json and any rank plans, the user's content survives exactly.

Documents are generated with random layout (indent unit, CRLF/LF, trailing commas, line and block
comments anywhere between elements, non-ASCII text) and merged with two plans in a row.
"""

import json
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dbgfwd.errors import BadFileError
from dbgfwd.vscode import AttachEntry, LaunchOptions, generate, owns_launch_entry, update_launch_json
from dbgfwd.vscode.edit import ListUpdate, merge_lists
from dbgfwd.vscode.jsonc import JsoncError, loads, parse

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
COMMENT_TEXT = TEXT.map(lambda s: s.replace("*/", "*_/"))
SCALARS = st.none() | st.booleans() | st.integers(-10**6, 10**6) | TEXT
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6)
USER_CONFIG = st.fixed_dictionaries(
    {"name": TEXT, "type": st.sampled_from(["debugpy", "node", "cppdbg", "chrome"]),
     "request": st.sampled_from(["launch", "attach"])},
    optional={"program": TEXT, "args": st.lists(TEXT, max_size=3), "env": st.dictionaries(TEXT, TEXT, max_size=2),
              "presentation": st.fixed_dictionaries({"group": TEXT}), "extra": JSON_VALUES})
USER_COMPOUND = st.fixed_dictionaries({"name": TEXT, "configurations": st.lists(TEXT, max_size=3)},
                                      optional={"stopAll": st.booleans()})


@st.composite
def jsonc_documents(draw):
    """(text, value) of a launch.json-like JSONC document the user wrote."""
    unit = draw(st.sampled_from(["\t", "  ", "    "]))
    eol = draw(st.sampled_from(["\n", "\r\n"]))

    def trivia(indent: str) -> str:
        kind = draw(st.sampled_from(["", "", "line", "block", "blank"]))
        if kind == "line":
            return f"{indent}// {draw(COMMENT_TEXT)}{eol}"
        if kind == "block":
            return f"{indent}/* {draw(COMMENT_TEXT)}{eol}{indent}   {draw(COMMENT_TEXT)} */{eol}"
        return eol if kind == "blank" else ""

    def dump(value, indent: str) -> str:
        if isinstance(value, (dict, list)) and value and draw(st.booleans()):
            inner = indent + unit
            items = list(value.items()) if isinstance(value, dict) else list(value)
            parts = []
            for k, item in enumerate(items):
                body = (json.dumps(item[0], ensure_ascii=False) + ": " + dump(item[1], inner)
                        if isinstance(value, dict) else dump(item, inner))
                comma = "," if k < len(items) - 1 or draw(st.booleans()) else ""
                parts.append(trivia(inner) + inner + body + comma + eol)
            o, c = ("{", "}") if isinstance(value, dict) else ("[", "]")
            return o + eol + "".join(parts) + trivia(inner) + indent + c
        return json.dumps(value, ensure_ascii=draw(st.booleans()))

    value = {"version": "0.2.0"}
    if draw(st.booleans()):
        value["configurations"] = draw(st.lists(USER_CONFIG, max_size=4))
    if draw(st.booleans()):
        value["compounds"] = draw(st.lists(USER_COMPOUND, max_size=2))
    if draw(st.booleans()):
        value["inputs"] = draw(st.lists(st.dictionaries(TEXT, TEXT, max_size=2), max_size=2))
    keys = list(value)
    order = draw(st.permutations(keys))
    value = {k: value[k] for k in order}
    text = trivia("") + dump(value, "") + eol + trivia("")
    return text, value


@st.composite
def plans(draw):
    ranks = draw(st.lists(st.integers(0, 70), unique=True, max_size=10))
    nodes = draw(st.lists(st.sampled_from(["node0", "wörker-1", "ip-10-0-0-1", "pod/ä"]), min_size=1, max_size=3))
    entries = [AttachEntry(rank=r, local_port=20000 + r + draw(st.integers(0, 3)), node=nodes[r % len(nodes)],
                           local_rank=r % 4, remote_root=draw(st.none() | st.just("/ctr")))
               for r in ranks]
    subsets = tuple(tuple(s) for s in draw(st.lists(st.lists(st.sampled_from(ranks), min_size=1, unique=True),
                                                    max_size=2))) if ranks else ()
    options = LaunchOptions(remote_root=draw(st.none() | TEXT), just_my_code=draw(st.booleans()), compounds=subsets,
                            compound_per_node=draw(st.booleans()), wait_task=draw(st.booleans()))
    return entries, options


def merge(text: str, plan) -> str:
    gen = generate(*plan)
    return merge_lists(text, [ListUpdate("configurations", gen.configurations, owns_launch_entry),
                              ListUpdate("compounds", gen.compounds, owns_launch_entry)])


def comments(text: str) -> list[str]:
    # Strings first, so that // or /* inside a string is not taken for a comment.
    return re.findall(r'//[^\r\n]*|/\*.*?\*/', re.sub(r'"(?:[^"\\\r\n]|\\.)*"', '""', text), re.S)


def user_spans(text: str) -> dict[str, list[str]]:
    root = parse(text)
    out = {}
    for key in ("configurations", "compounds"):
        node = root.member(key)
        out[key] = [text[i.start:i.end] for i in (node.items if node else []) if not owns_launch_entry(i.value)]
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jsonc_documents(), plans(), plans())
def test_user_content_survives_any_plan(doc, first, second):
    text, value = doc
    assert loads(text) == value  # the generator makes valid JSONC
    t2 = merge(merge(text, first), second)
    got = loads(t2)
    gen = generate(*second)
    for key, ours in (("configurations", gen.configurations), ("compounds", gen.compounds)):
        assert [v for v in got.get(key, []) if not owns_launch_entry(v)] == value.get(key, [])
        assert [v for v in got.get(key, []) if owns_launch_entry(v)] == ours
    assert {k: v for k, v in got.items() if k not in ("configurations", "compounds")} == \
        {k: v for k, v in value.items() if k not in ("configurations", "compounds")}
    assert comments(t2) == comments(text)
    assert user_spans(t2) == user_spans(text)
    assert merge(t2, second) == t2  # a second run is a no-op
    emptied = merge(t2, ([], LaunchOptions()))
    if value.get("configurations") and value.get("compounds"):
        assert emptied == text  # taking every rank out gives the user's bytes back


@settings(max_examples=150, deadline=None)
@given(jsonc_documents(), plans(), st.data())
def test_damaged_documents_are_refused_or_merged_never_half_written(doc, plan, data):
    text, _ = doc
    structural = [i for i, ch in enumerate(text) if ch in '{}[],:"/']
    assume(structural)
    cut = data.draw(st.sampled_from(structural))
    damaged = text[:cut] + text[cut + 1:]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "launch.json"
        path.write_bytes(damaged.encode())
        try:
            update_launch_json(path, *plan)
        except BadFileError as exc:
            assert path.read_bytes() == damaged.encode()
            assert sorted(p.name for p in Path(d).iterdir()) == ["launch.json"]
            lines = re.split(r"\r\n|\r|\n", damaged)
            assert 1 <= exc.line <= len(lines) and 1 <= exc.column <= len(lines[exc.line - 1]) + 1
            try:
                parse(damaged)
            except JsoncError:
                pass
            else:  # parsed, so the refusal must be about shape (e.g. a list turned into something else)
                assert "list" in exc.problem or "object" in exc.problem or "more than once" in exc.problem
        else:
            loads(path.read_text())
