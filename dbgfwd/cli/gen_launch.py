"""`dbgfwd gen-launch`: write VS Code attach configs, compounds and the wait task for the ranks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from dbgfwd import envvars, planner
from dbgfwd.errors import UsageError
from dbgfwd.vscode import LaunchOptions, generate, plan_changes, render_diff, update_launch_json
from dbgfwd.vscode.plan import PlanRequest, entries_from_plan, entries_from_session, select, session_path

try:  # the shared console once dbgfwd.console exists
    from dbgfwd.console import console
except ImportError:  # pragma: no cover - until the CLI core lands
    from rich.console import Console

    console = Console(stderr=True)

HELP = (
    "Write one attach config per rank, a 'dbgfwd: all ranks' compound and its wait task into "
    ".vscode/launch.json and .vscode/tasks.json. The ranks come from the running `dbgfwd attach` session, "
    "or from --ranks N. Only entries dbgfwd wrote are replaced; everything else is kept byte for byte."
)


def gen_launch(
    ranks: Annotated[Optional[int], typer.Option(
        "--ranks", min=1, help="plan N ranks instead of reading the session")] = None,
    base_port: Annotated[int, typer.Option(
        "--base-port", envvar=envvars.BASE_PORT, help="remote debugpy port of local rank 0")
    ] = planner.DEFAULT_BASE_PORT,
    local_base_port: Annotated[Optional[int], typer.Option(
        "--local-base-port", help="local port of rank 0 (rank r gets P + r; default: --base-port)")] = None,
    ranks_per_node: Annotated[Optional[int], typer.Option(
        "--ranks-per-node", min=1, help="ranks per node (default: all on one node)")] = None,
    only: Annotated[Optional[str], typer.Option("--only", help="only these ranks, e.g. 0,2-3")] = None,
    workspace: Annotated[Path, typer.Option(
        "--workspace", envvar=envvars.WORKSPACE, help="workspace folder (holds .dbgfwd/ and .vscode/)")
    ] = Path("."),
    launch_json: Annotated[Optional[Path], typer.Option(
        "--launch-json", help="file to update (default: <workspace>/.vscode/launch.json)")] = None,
    local_root: Annotated[str, typer.Option(
        "--local-root", help="local side of pathMappings")] = "${workspaceFolder}",
    remote_root: Annotated[Optional[str], typer.Option(
        "--remote-root", help="remote side of pathMappings (default: what attach inferred, else none)")
    ] = None,
    just_my_code: Annotated[bool, typer.Option("--just-my-code", help="step only into your own code")] = False,
    compound: Annotated[Optional[List[str]], typer.Option(
        "--compound", help="also a compound for these ranks, e.g. 0,1 (repeatable)")] = None,
    compound_per_node: Annotated[bool, typer.Option(
        "--compound-per-node", help="also one compound per node")] = False,
    wait_task: Annotated[bool, typer.Option(
        "--wait-task/--no-wait-task", help="compounds first run `dbgfwd wait` (a task in tasks.json)")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the diff instead of writing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the entries as JSON instead of writing")] = False,
) -> None:
    workspace = Path(workspace)
    only_set = planner.parse_rank_set(only) if only else None
    if ranks is not None:
        request = PlanRequest(ranks, base_port, local_base_port, ranks_per_node, only_set)
        entries = entries_from_plan(request, workspace, remember=not (dry_run or as_json))
    else:
        found = entries_from_session(session_path(workspace))
        if found is None:
            raise UsageError(f"no dbgfwd session in {workspace.resolve()} and no --ranks",
                             hint="run `dbgfwd attach ...` first, or pass --ranks N to plan the ports")
        entries = select(found, only_set)
    present = {e.rank for e in entries}
    subsets = []
    for spec in compound or ():
        members = planner.parse_rank_set(spec)
        missing = sorted(members - present)
        if missing:
            raise UsageError(f"--compound {spec} names ranks not in the plan: {','.join(map(str, missing))}")
        subsets.append(tuple(sorted(members)))
    options = LaunchOptions(local_root=local_root, remote_root=remote_root, just_my_code=just_my_code,
                            compounds=tuple(subsets), compound_per_node=compound_per_node, wait_task=wait_task)
    path = launch_json or workspace / ".vscode" / "launch.json"
    if as_json:
        changes = plan_changes(path, entries, options)
        out = {"launch_json": str(changes[0].path),
               "tasks_json": str(changes[1].path) if len(changes) > 1 else None,
               **generate(entries, options).as_dict()}
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    if dry_run:
        diff = render_diff(plan_changes(path, entries, options))
        typer.echo(diff if diff else "no changes", nl=not diff)
        return
    result = update_launch_json(path, entries, options)
    shown = os.path.relpath(result.path)
    if not (result.changed or result.tasks_changed):
        console.print(f"{shown}: up to date ({len(entries)} ranks)", highlight=False, markup=False)
        return
    console.print(f"{shown}: {len(entries)} attach configs written", highlight=False, markup=False)
    if result.tasks_changed and result.tasks_path:
        console.print(f"{os.path.relpath(result.tasks_path)}: wait task updated", highlight=False, markup=False)
    if result.backup:
        console.print(f"previous file kept as {os.path.relpath(result.backup)}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("gen-launch", help=HELP)(gen_launch)
