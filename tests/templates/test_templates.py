"""Package data: the skeletons load through importlib.resources and fill as documented."""

import json
from importlib import resources

import pytest

from dbgfwd import templates

JSON_TEMPLATES = ["attach.json", "compound.json", "wait_task.json", "launch.json", "tasks.json"]


@pytest.mark.parametrize("name", JSON_TEMPLATES)
def test_json_templates_are_package_data(name):
    assert resources.files("dbgfwd.templates").joinpath(name).is_file()
    json.loads(templates.read_text(name))


def test_fill_keeps_types_and_substitutes_inside_strings():
    out = templates.fill({"a": "{{n}}", "b": ["x {{n}} y", "{{flag}}"], "c": {"d": "{{items}}"}},
                         {"n": 3, "flag": False, "items": [1, 2]})
    assert out == {"a": 3, "b": ["x 3 y", False], "c": {"d": [1, 2]}}


def test_unknown_placeholder_is_a_bug_not_silence():
    with pytest.raises(KeyError):
        templates.fill({"a": "{{missing}}"}, {})
