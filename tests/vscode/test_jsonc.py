"""The JSONC reader: JSON's values, VS Code's extensions, exact error positions."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbgfwd.vscode.jsonc import JsoncError, loads, parse, position

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values, st.sampled_from([None, 2, "\t"]), st.booleans())
def test_plain_json_reads_like_the_json_module(value, indent, ascii_only):
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    assert loads(text) == json.loads(text)


def test_comments_and_trailing_commas():
    text = '\ufeff{ // line\r\n "a": [1, 2, /* in */ ], /* block\n */ "b": {"c": "//not a comment",},\n}'
    assert loads(text) == {"a": [1, 2], "b": {"c": "//not a comment"}}


def test_spans_cover_the_source_text():
    text = '{"k": [ {"x": 1} ,\n\t{"y": "ü"} ], "n": null}'
    root = parse(text)
    arr = root.member("k")
    assert text[arr.start:arr.end] == '[ {"x": 1} ,\n\t{"y": "ü"} ]'
    assert [text[i.start:i.end] for i in arr.items] == ['{"x": 1}', '{"y": "ü"}']
    assert [text[c] if c is not None else None for c in arr.commas] == [",", None]


def test_last_duplicate_wins_like_vscode():
    root = parse('{"a": 1, "a": 2}')
    assert root.value == {"a": 2} and root.member("a").value == 2 and root.member_count("a") == 2


@pytest.mark.parametrize("text, line, column, words", [
    ('{\n  "a": 1\n  "b": 2\n}', 3, 3, "expected ',' or '}'"),
    ('{"a": [1,,2]}', 1, 10, "missing value"),
    ("", 1, 1, "file ends"),
    ('{\r\n"a": "open\r\n}', 2, 11, "line break inside a string"),
    ('{"a": 1} /* never closed', 1, 10, "never closed"),
    ("{'a': 1}", 1, 2, "double quotes"),
    ('{"a": tru}', 1, 7, "expected a value"),
    ('{"a": 1}\n{"b": 2}', 2, 1, "after the end"),
    ('{"a": "\\x"}', 1, 7, "invalid escape"),
    ('[1 2]', 1, 4, "expected ',' or ']'"),
])
def test_errors_name_line_and_column(text, line, column, words):
    with pytest.raises(JsoncError) as info:
        parse(text)
    assert (info.value.line, info.value.column) == (line, column)
    assert words in info.value.problem


def test_position_counts_crlf_and_cr_as_one_break():
    text = "a\r\nb\rc\nd"
    assert position(text, text.index("d")) == (4, 1)
    assert position(text, text.index("c")) == (3, 1)
    assert position(text, 0) == (1, 1)
