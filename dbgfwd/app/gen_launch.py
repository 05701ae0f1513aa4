"""`gen-launch` as a use case: which ranks, which compounds, and the options launch.json is written with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dbgfwd.errors import UsageError
from dbgfwd.plan.ranksets import parse_rank_set
from dbgfwd.vscode import AttachEntry, LaunchOptions
from dbgfwd.vscode.plan import PlanRequest, entries_from_plan, entries_from_session, select
from dbgfwd.vscode.tasks import task_workspace, wait_command


@dataclass(frozen=True)
class GenLaunch:
    workspace: Path
    plan: PlanRequest | None  # --ranks N: plan the ports; None: read the running session
    only: frozenset[int] | None = None
    launch_json: Path | None = None  # default <workspace>/.vscode/launch.json
    local_root: str = "${workspaceFolder}"
    remote_root: str | None = None
    just_my_code: bool | None = None  # None: leave it to the user's debugpy.debugJustMyCode setting
    compounds: tuple[str, ...] = ()  # rank sets as the user wrote them
    compound_per_node: bool = False
    wait_task: bool = True

    @property
    def path(self) -> Path:
        return self.launch_json or self.workspace / ".vscode" / "launch.json"


def entries(req: GenLaunch) -> list[AttachEntry]:
    if req.plan is not None:
        return entries_from_plan(req.plan, req.workspace)
    found = entries_from_session(req.workspace)
    if found is None:
        raise UsageError(f"no dbgfwd session in {req.workspace.resolve()} and no --ranks",
                         hint="run `dbgfwd attach ...` first, or pass --ranks N to plan the ports")
    return select(found, req.only)


def launch_options(req: GenLaunch, ranks: list[AttachEntry]) -> LaunchOptions:
    present = {e.rank for e in ranks}
    subsets = []
    for spec in req.compounds:
        members = parse_rank_set(spec)
        missing = sorted(members - present)
        if missing:
            raise UsageError(f"--compound {spec} names ranks not in the plan: {','.join(map(str, missing))}")
        subsets.append(tuple(sorted(members)))
    return LaunchOptions(local_root=req.local_root, remote_root=req.remote_root, just_my_code=req.just_my_code,
                         compounds=tuple(subsets), compound_per_node=req.compound_per_node, wait_task=req.wait_task,
                         wait_command=wait_command(), workspace=task_workspace(req.path, req.workspace),
                         job_port=_running_job_port(req.workspace))


def _running_job_port(workspace: Path) -> int | None:
    """The job session of the attach running in `workspace`: its config stays when gen-launch rewrites the file."""
    from dbgfwd.workspace import state

    try:
        session = state.read_session(workspace)
    except Exception:  # an unreadable session file is `status`'s to report, not gen-launch's
        return None
    if session is None or not session.alive:
        return None
    port = session.data.get("job_port")
    return int(port) if isinstance(port, int) and 0 < port < 65536 else None
