"""`dbgfwd gen-launch`: write VS Code attach configs, compounds and the wait task for the ranks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from dbgfwd.cli import options as o
from dbgfwd.ui.console import console

HELP = (
    "Write one attach config per rank, a 'dbgfwd: all ranks' compound and its wait task into "
    ".vscode/launch.json and .vscode/tasks.json. The ranks come from the running `dbgfwd attach` session, "
    "or from --ranks N. Only entries dbgfwd wrote are replaced; everything else is kept byte for byte."
)


def gen_launch(
    ranks: Optional[int] = typer.Option(None, "--ranks", min=1, metavar="N",
                                        help="plan N ranks instead of reading the running session"),
    base_port: int = o.BasePort,
    local_base_port: Optional[int] = o.LocalBasePort,
    ranks_per_node: Optional[int] = o.RanksPerNode,
    only: Optional[str] = o.Only,
    workspace: Optional[Path] = o.Workspace,
    launch_json: Optional[Path] = typer.Option(None, "--launch-json", dir_okay=False,
                                               help="file to update (default: <workspace>/.vscode/launch.json)"),
    local_root: str = typer.Option("${workspaceFolder}", "--local-root", help="local side of pathMappings"),
    remote_root: Optional[str] = typer.Option(
        None, "--remote-root", help="source root on the ranks (default: what attach inferred, else no mapping)"),
    just_my_code: Optional[bool] = typer.Option(
        None, "--just-my-code/--no-just-my-code",
        help="write justMyCode into the attach configs (default: not written, so your VS Code setting "
             "debugpy.debugJustMyCode applies)"),
    compound: Optional[List[str]] = typer.Option(None, "--compound", metavar="RANKS",
                                                 help="also a compound for these ranks, e.g. 0,1 (repeatable)"),
    compound_per_node: bool = typer.Option(False, "--compound-per-node", help="also one compound per node"),
    wait_task: bool = typer.Option(True, "--wait-task/--no-wait-task",
                                   help="compounds first run `dbgfwd wait` (a task in tasks.json)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the diff instead of writing"),
    json_out: bool = typer.Option(False, "--json", help="print the entries as JSON instead of writing"),
) -> None:
    from dbgfwd.app import gen_launch as app
    from dbgfwd.vscode import generate, plan_changes, render_diff, update_launch_json
    from dbgfwd.vscode.plan import PlanRequest, remember_ports
    from dbgfwd.vscode.writer import check_target

    workspace = o.workspace_of(workspace)
    only_set = o.rank_set(only)
    plan = PlanRequest(ranks, base_port, local_base_port, ranks_per_node, only_set) if ranks is not None else None
    req = app.GenLaunch(workspace=workspace, plan=plan, only=only_set, launch_json=launch_json,
                        local_root=local_root, remote_root=remote_root, just_my_code=just_my_code,
                        compounds=tuple(compound or ()), compound_per_node=compound_per_node, wait_task=wait_task)
    check_target(req.path)
    entries = app.entries(req)
    options = app.launch_options(req, entries)
    path = req.path
    if json_out:
        changes = plan_changes(path, entries, options)
        console.emit_json({"launch_json": str(changes[0].path),
                           "tasks_json": str(changes[1].path) if len(changes) > 1 else None,
                           **generate(entries, options).as_dict()})
        return
    if dry_run:
        diff = render_diff(plan_changes(path, entries, options))
        typer.echo(diff if diff else "no changes", nl=not diff)
        return
    result = update_launch_json(path, entries, options)
    for warning in result.warnings:
        console.warn(warning)
    from dbgfwd.vscode.plan import binding_warnings

    for warning in binding_warnings(entries, workspace, local_root, remote_root):
        console.warn(warning)
    if result.tasks_changed:
        from dbgfwd.vscode.tasks import portability_warning

        said = portability_warning(options.wait_command)
        if said:
            console.warn(said)
    if ranks is not None:
        remember_ports(workspace, entries)
    if not (result.changed or result.tasks_changed):
        console.info(f"{_shown(result.path)}: up to date ({len(entries)} ranks)")
        return
    gen = generate(entries, options)
    console.info(f"{_shown(result.path)}: {len(gen.configurations)} attach configs and "
                 f"{len(gen.compounds)} compound(s) written")
    if result.tasks_changed and result.tasks_path:
        console.info(f"{_shown(result.tasks_path)}: {len(gen.tasks)} wait task(s) written")
    if result.backup:
        console.info(f"the previous file is kept as {_shown(result.backup)}")


def _shown(path: Path) -> str:
    """Relative to the current folder when it is inside it, else absolute (never ../../../..)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def register(app: typer.Typer) -> None:
    app.command("gen-launch", help=HELP)(gen_launch)
