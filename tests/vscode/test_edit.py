"""dbgfwd.vscode.edit.render: the layout json.dumps gives, made faster for the values dbgfwd writes."""

import json
import math
from collections import OrderedDict

from hypothesis import given
from hypothesis import strategies as st

from dbgfwd.vscode.edit import render

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
SCALARS = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | TEXT
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                      | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)


@given(VALUES, st.sampled_from(["\t", "  ", "    ", ""]), st.sampled_from(["", "  ", "\t\t"]),
       st.sampled_from(["\n", "\r\n"]))
def test_render_is_json_dumps_laid_out_like_the_document(value, unit, indent, eol):
    expected = json.dumps(value, indent=unit, ensure_ascii=False).replace("\n", eol + indent)
    assert render(value, indent, unit, eol) == expected


def test_values_json_writes_its_own_way_are_left_to_json():
    for value in ({1: "a", None: 2}, OrderedDict(b=1, a=2), [math.nan, -math.inf], True, {"x": (1, [])}):
        assert render(value, "  ", "    ", "\n") == json.dumps(value, indent="    ", ensure_ascii=False).replace(
            "\n", "\n  ")
