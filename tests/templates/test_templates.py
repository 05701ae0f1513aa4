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


def test_a_template_filled_twice_gives_two_copies():
    first = templates.load_json("attach.json", VALUES)
    first["presentation"]["group"] = "changed"
    first["connect"]["port"] = -1
    second = templates.load_json("attach.json", VALUES)
    assert second == templates.fill(json.loads(templates.read_text("attach.json")), VALUES)
    assert second["connect"]["port"] == 5678 and second["presentation"].get("group") != "changed"


VALUES = {"rank": 3, "node": "n1", "host": "127.0.0.1", "local_port": 5678, "local_root": "/w", "remote_root": "/r",
          "just_my_code": False, "order": 103}
