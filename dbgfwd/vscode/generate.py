"""The entries dbgfwd owns: attach configs, compounds and wait tasks, built from the templates.

Ownership is marked inside each entry, where VS Code's schemas accept unknown keys without a
warning (checked against VS Code's debugSchemas.ts / debugger.ts / tasks jsonSchema_v2.ts): a
debug configuration's top level is `additionalProperties: false` but its `presentation` object is
open, so configs and compounds carry `"presentation": {..., "dbgfwd": "managed"}`; a task's top
level and `presentation` are closed but `options.env` is a free-form map, so the wait task carries
`"options": {"env": {"DBGFWD_MANAGED": "1"}}`. Names are never used to decide ownership.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Sequence

from dbgfwd import envvars, templates
from dbgfwd.errors import UsageError
from dbgfwd.plan.ranksets import format_ranks
from dbgfwd.vscode.model import AttachEntry, LaunchOptions

MARKER_KEY = "dbgfwd"
MARKER_VALUE = "managed"
TASK_MARKER_ENV = "DBGFWD_MANAGED"
RANK_ORDER_BASE = 10000  # rank configs sort after every compound in the "dbgfwd" group
# Above this many ranks the per-rank configs are hidden from the debug dropdown (compounds still start
# them, and the Run and Debug view still lists them): the dropdown shows the compounds, not 64 entries.
HIDE_RANKS_ABOVE = 8


def owns_launch_entry(value: Any) -> bool:
    """Is this configuration or compound one dbgfwd wrote?"""
    if not isinstance(value, dict):
        return False
    presentation = value.get("presentation")
    if isinstance(presentation, dict) and MARKER_KEY in presentation:
        return True
    # Early builds marked their configs with a top-level {"dbgfwd": {...}} object.
    return isinstance(value.get(MARKER_KEY), dict)


def owns_task(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    options = value.get("options")
    env = options.get("env") if isinstance(options, dict) else None
    return isinstance(env, dict) and TASK_MARKER_ENV in env


JOB_NAME = "dbgfwd: job"  # the one config for the whole job; no other name dbgfwd writes says "job"


def job_config(port: int) -> dict:
    """The attach config of the job session (dbgfwd.app.jobsession): every rank appears under it."""
    return {"name": JOB_NAME, "type": "debugpy", "request": "attach", "connect": {"host": "127.0.0.1", "port": port},
            "presentation": {"group": "dbgfwd", "order": -1, MARKER_KEY: MARKER_VALUE}}  # first in the dropdown


def config_name(entry: AttachEntry) -> str:
    return f"dbgfwd: rank {entry.rank} ({entry.node})"


@dataclass(frozen=True)
class Generated:
    configurations: list[dict]
    compounds: list[dict]
    tasks: list[dict]

    def as_dict(self) -> dict:
        return {"ranks": endpoints(self.configurations), "configurations": self.configurations,
                "compounds": self.compounds, "tasks": self.tasks}


def endpoints(configurations: list[dict]) -> list[dict]:
    """Each rank's address and path mappings, for any editor or script (nvim-dap, a DAP client of one's own)."""
    out = []
    for c in configurations:
        if c.get("name") == JOB_NAME:
            continue
        rank = c.get("name", "").split()[2] if c.get("name", "").startswith("dbgfwd: rank ") else None
        out.append({"rank": int(rank) if rank and rank.isdigit() else None, "name": c.get("name"),
                    "host": c["connect"]["host"], "port": c["connect"]["port"],
                    "pathMappings": c.get("pathMappings", [])})
    return out


def attach_config(entry: AttachEntry, options: LaunchOptions, hidden: bool = False) -> dict:
    # The user's --remote-root wins; else the root attach inferred for this rank; else no mapping.
    remote_root = options.remote_root if options.remote_root is not None else entry.remote_root
    config = templates.load_json("attach.json", {
        "rank": entry.rank, "node": entry.node, "host": entry.host, "local_port": entry.local_port,
        "local_root": options.local_root, "remote_root": remote_root,
        "just_my_code": options.just_my_code, "order": RANK_ORDER_BASE + entry.rank,
    })
    if remote_root is None:
        # Without a known remote root the paths are the same on both sides, which is debugpy's default.
        config.pop("pathMappings", None)
    if options.just_my_code is None:
        config.pop("justMyCode", None)  # only when asked: the user's debugpy.debugJustMyCode setting applies
    if hidden:
        config["presentation"]["hidden"] = True
    config["presentation"][MARKER_KEY] = MARKER_VALUE
    return config


def _wait_task(label: str, ranks: Sequence[int], options: LaunchOptions) -> dict:
    argv = shlex.split(options.wait_command)
    if not argv:
        raise UsageError("the wait command is empty", hint="pass the command that runs dbgfwd")
    task = templates.load_json("wait_task.json", {
        "label": label, "command": argv[0], "args": argv[1:] + ["wait", "--ranks", format_ranks(ranks)],
    })
    env = {TASK_MARKER_ENV: "1"}
    if options.workspace:
        env[envvars.WORKSPACE] = options.workspace
    task["options"] = {"env": env}
    return task


def _wait_label(ranks: Sequence[int], present: Sequence[int]) -> str:
    # Named by rank set, so compounds waiting for the same ranks share one task.
    if list(ranks) == list(present):
        return "dbgfwd: wait for all ranks"
    return f"dbgfwd: wait for ranks {format_ranks(ranks)}"


def _compound_sets(entries: Sequence[AttachEntry], options: LaunchOptions) -> list[tuple[str, str, list[int]]]:
    """(compound name, wait task label, ranks) for every compound to write, in picker order."""
    present = [e.rank for e in entries]
    sets = [("dbgfwd: all ranks", _wait_label(present, present), present)]
    seen = set()
    for subset in options.compounds:
        ranks = [r for r in sorted(set(subset)) if r in set(present)]
        spec = format_ranks(ranks)
        if ranks and spec not in seen:
            seen.add(spec)
            sets.append((f"dbgfwd: ranks {spec}", _wait_label(ranks, present), ranks))
    if options.compound_per_node:
        nodes: dict[str, list[int]] = {}
        for e in entries:
            nodes.setdefault(e.node, []).append(e.rank)
        for node, ranks in nodes.items():
            sets.append((f"dbgfwd: ranks {format_ranks(ranks)} ({node})", _wait_label(ranks, present), ranks))
    return sets


def _unique(name: str, taken: frozenset[str]) -> str:
    """`name`, unless one of the user's entries already has it: VS Code resolves compound members and
    preLaunchTask by name, so a clash would run the user's entry from dbgfwd's compound."""
    if name not in taken:
        return name
    n = 1
    while True:
        candidate = f"{name} [dbgfwd{'' if n == 1 else f' {n}'}]"
        if candidate not in taken:
            return candidate
        n += 1


def generate(entries: Sequence[AttachEntry], options: LaunchOptions, taken: frozenset[str] = frozenset(),
             taken_labels: frozenset[str] = frozenset()) -> Generated:
    """Every entry dbgfwd owns for this plan (nothing at all for an empty plan). `taken`: the names of the
    user's configurations and compounds, `taken_labels`: the labels of the user's tasks; dbgfwd's own
    names never equal one of them."""
    entries = sorted(entries, key=lambda e: e.rank)
    ranks = [e.rank for e in entries]
    if len(set(ranks)) != len(ranks):
        dupes = sorted({r for r in ranks if ranks.count(r) > 1})
        raise UsageError(f"rank {format_ranks(dupes)} appears more than once in the plan")
    if not entries:
        return Generated([], [], [])
    names = {e.rank: _unique(config_name(e), taken) for e in entries}
    hidden = len(entries) > HIDE_RANKS_ABOVE
    configurations = [attach_config(e, options, hidden) for e in entries]
    for config, e in zip(configurations, entries):
        config["name"] = names[e.rank]
    compounds, tasks, labels = [], [], set()
    if options.job_port:
        job = job_config(options.job_port)
        job["name"] = _unique(JOB_NAME, taken)
        configurations.insert(0, job)
    for order, (name, label, members) in enumerate(_compound_sets(entries, options)):
        name, label = _unique(name, taken), _unique(label, taken_labels)
        compound = templates.load_json("compound.json", {
            "name": name, "configurations": [names[r] for r in members], "pre_launch_task": label,
            "order": order,
        })
        if not options.wait_task:
            compound.pop("preLaunchTask")
        elif label not in labels:
            labels.add(label)
            tasks.append(_wait_task(label, members, options))
        compound["presentation"][MARKER_KEY] = MARKER_VALUE
        compounds.append(compound)
    return Generated(configurations, compounds, tasks)
