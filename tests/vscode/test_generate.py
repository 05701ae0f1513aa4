"""Generated entries: golden files for 1, 4, 64 ranks and subsets; schema-level checks; ownership."""

import os
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from dbgfwd.vscode import (
    AttachEntry,
    LaunchOptions,
    format_ranks,
    generate,
    owns_launch_entry,
    owns_task,
    update_launch_json,
)
from dbgfwd.vscode.jsonc import loads
from tests.vscode.conftest import entries

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("DBGFWD_UPDATE_GOLDEN") == "1"  # regenerate after an intended change, then review

CASES = {
    "1rank": (entries(1), LaunchOptions()),
    "4ranks": (entries(4, per_node=2, remote_root="/workspace"),
               LaunchOptions(compounds=((0, 1),), compound_per_node=True)),
    "64ranks": (entries(64, per_node=8), LaunchOptions(remote_root="/app", wait_command="python -m dbgfwd")),
    "subset": ([e for e in entries(8, per_node=4) if e.rank in (1, 3, 6)],
               LaunchOptions(local_root="${workspaceFolder}/src", remote_root="/job", just_my_code=True,
                             compounds=((1, 3), (3, 6)), compound_per_node=True)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(tmp_path, case):
    plan, options = CASES[case]
    update_launch_json(tmp_path / "launch.json", plan, options)
    for name in ("launch.json", "tasks.json"):
        got = (tmp_path / name).read_text()
        golden = GOLDEN / f"{case}.{name}"
        if UPDATE:
            golden.write_text(got)
        assert got == golden.read_text(), f"{golden} differs (DBGFWD_UPDATE_GOLDEN=1 regenerates it)"


# What VS Code + the debugpy extension accept for an attach config (their package.json and VS Code's
# debugger.ts: top level closed, `presentation` open) and for compounds and process tasks.
_STR, _BOOL, _NUM = {"type": "string"}, {"type": "boolean"}, {"type": "number"}
ATTACH_SCHEMA = {
    "type": "object",
    "required": ["name", "type", "request", "connect"],
    "additionalProperties": False,
    "properties": {
        "name": _STR, "type": {"const": "debugpy"}, "request": {"const": "attach"},
        "connect": {"type": "object", "required": ["port"], "additionalProperties": False,
                    "properties": {"host": _STR, "port": {"type": ["number", "string"]}}},
        "pathMappings": {"type": "array", "items": {
            "type": "object", "required": ["localRoot", "remoteRoot"],
            "properties": {"localRoot": _STR, "remoteRoot": _STR}}},
        "justMyCode": _BOOL, "redirectOutput": _BOOL, "logToFile": _BOOL, "showReturnValue": _BOOL,
        "subProcess": _BOOL, "preLaunchTask": _STR, "postDebugTask": _STR, "debugServer": _NUM,
        "presentation": {"type": "object", "properties": {"hidden": _BOOL, "group": _STR, "order": _NUM}},
    },
}
COMPOUND_SCHEMA = {
    "type": "object", "required": ["name", "configurations"],
    "properties": {"name": _STR, "configurations": {"type": "array", "items": _STR}, "stopAll": _BOOL,
                   "preLaunchTask": _STR,
                   "presentation": {"type": "object", "properties": {"hidden": _BOOL, "group": _STR,
                                                                     "order": _NUM}}},
}
TASK_SCHEMA = {
    "type": "object", "required": ["label", "type", "command"], "additionalProperties": False,
    "properties": {
        "label": _STR, "type": {"enum": ["process", "shell"]}, "command": _STR,
        "args": {"type": "array", "items": _STR}, "problemMatcher": {"type": "array"},
        "presentation": {"type": "object", "additionalProperties": False,
                         "properties": {"reveal": {"enum": ["always", "silent", "never"]}, "echo": _BOOL,
                                        "focus": _BOOL, "panel": _STR, "clear": _BOOL}},
        "options": {"type": "object", "additionalProperties": False,
                    "properties": {"cwd": _STR, "env": {"type": "object", "additionalProperties": _STR}}},
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_entry_matches_the_schemas(case):
    plan, options = CASES[case]
    gen = generate(plan, options)
    for config in gen.configurations:
        jsonschema.validate(config, ATTACH_SCHEMA)
    names = {c["name"] for c in gen.configurations}
    labels = {t["label"] for t in gen.tasks}
    for compound in gen.compounds:
        jsonschema.validate(compound, COMPOUND_SCHEMA)
        assert set(compound["configurations"]) <= names
        assert compound["preLaunchTask"] in labels
    for task in gen.tasks:
        jsonschema.validate(task, TASK_SCHEMA)
    assert len(names) == len(gen.configurations)  # compounds refer by name: names must be unique


def test_schema_rejects_what_vscode_flags():
    config = generate(entries(1), LaunchOptions()).configurations[0]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**config, "dbgfwd": "top-level keys get a warning"}, ATTACH_SCHEMA)


def test_entry_fields():
    e = AttachEntry(rank=3, local_port=41003, node="worker-1", local_rank=1, remote_root="/ctr/cwd")
    gen = generate([e], LaunchOptions(just_my_code=True))
    (config,) = gen.configurations
    assert config["name"] == "dbgfwd: rank 3 (worker-1)"
    assert config["connect"] == {"host": "127.0.0.1", "port": 41003}
    assert config["pathMappings"] == [{"localRoot": "${workspaceFolder}", "remoteRoot": "/ctr/cwd"}]
    assert config["justMyCode"] is True and config["presentation"]["group"] == "dbgfwd"
    assert gen.compounds[0]["name"] == "dbgfwd: all ranks" and gen.compounds[0]["stopAll"] is True
    assert gen.tasks[0]["args"] == ["wait", "--ranks", "3"]
    no_root = generate([replace(e, remote_root=None)], LaunchOptions()).configurations[0]
    assert "pathMappings" not in no_root
    explicit = generate([e], LaunchOptions(remote_root="/explicit")).configurations[0]  # the user's root wins
    assert explicit["pathMappings"] == [{"localRoot": "${workspaceFolder}", "remoteRoot": "/explicit"}]


def test_ownership_is_by_marker_not_by_name():
    gen = generate(entries(2), LaunchOptions())
    assert all(owns_launch_entry(c) for c in gen.configurations + gen.compounds)
    assert all(owns_task(t) for t in gen.tasks)
    lookalike = {**gen.configurations[0], "presentation": {"group": "dbgfwd", "order": 1}}
    assert not owns_launch_entry(lookalike)  # a user's copy without the marker is theirs
    assert not owns_task({"label": "dbgfwd: wait for all ranks", "command": "dbgfwd"})
    assert not owns_launch_entry("dbgfwd: rank 0") and not owns_task(None)


def test_empty_plan_generates_nothing_and_duplicates_are_refused():
    assert generate([], LaunchOptions()).as_dict() == {"ranks": [], "configurations": [], "compounds": [], "tasks": []}
    with pytest.raises(Exception, match="rank 1 appears more than once"):
        generate(entries(2) + entries(2)[1:], LaunchOptions())


@pytest.mark.parametrize("ranks, text", [([0], "0"), ([0, 1, 2, 5], "0-2,5"), ([7, 3, 4], "3-4,7"), ([], "")])
def test_format_ranks(ranks, text):
    assert format_ranks(ranks) == text


def test_goldens_are_jsonc_readable():
    for path in GOLDEN.glob("*.json"):
        loads(path.read_text())


def test_just_my_code_is_written_only_when_asked():
    """Unasked, the user's debugpy.debugJustMyCode setting applies: nothing is written over it."""
    assert all("justMyCode" not in c for c in generate(entries(2), LaunchOptions()).configurations)
    for asked in (True, False):
        assert all(c["justMyCode"] is asked
                   for c in generate(entries(2), LaunchOptions(just_my_code=asked)).configurations)


def test_many_ranks_hide_their_configs_behind_the_compounds_and_nodes_are_named_for_people():
    few = generate(entries(8), LaunchOptions())
    assert not any(c["presentation"].get("hidden") for c in few.configurations)
    many = generate(entries(9), LaunchOptions(compound_per_node=True))
    assert all(c["presentation"]["hidden"] is True for c in many.configurations)
    assert all(not c["presentation"].get("hidden") for c in many.compounds)  # compounds still start them
    names = [c["name"] for c in many.compounds]
    assert not any(" node " in n for n in names), names
    assert any(n.startswith("dbgfwd: ranks ") and n.endswith(")") for n in names[1:]), names


def test_json_output_names_every_endpoint_and_mapping():
    doc = generate(entries(2), LaunchOptions(remote_root="/workspace")).as_dict()
    assert [(r["rank"], r["host"], r["port"]) for r in doc["ranks"]] == [
        (c["rank"] if "rank" in c else i, c2["connect"]["host"], c2["connect"]["port"])
        for i, (c, c2) in enumerate(zip([{}, {}], doc["configurations"]))]
    assert doc["ranks"][0]["pathMappings"][0]["remoteRoot"] == "/workspace"
