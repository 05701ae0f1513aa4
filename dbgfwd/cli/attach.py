"""`dbgfwd attach`: find the ranks, forward each, write launch.json, keep it alive until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dbgfwd import envvars
from dbgfwd.cli import complete
from dbgfwd.cli import options as o
from dbgfwd.ui.console import console

INJECT = "Jobs started without dbgfwd-rank"


@o.with_provider_options
def attach(
    targets: Optional[List[str]] = typer.Argument(
        None, help="what to attach to: pod or workload (pytorchjob/NAME), [user@]host, Batch job id; "
                   "nothing = local ranks"),
    provider: Optional[str] = typer.Option(None, "--provider", "-p", envvar=envvars.PROVIDER, autocompletion=complete.providers,
                                           help="local, ssh, kubernetes or batch (default: inferred from the "
                                                "options and targets, else local)"),
    base_port: int = o.BasePort,
    local_base_port: Optional[int] = o.LocalBasePort,
    ranks_per_node: Optional[int] = o.RanksPerNode,
    only: Optional[str] = o.Only,
    expected: Optional[int] = typer.Option(None, "--ranks", min=1, metavar="N", rich_help_panel=o.PORTS,
                                           help="plan N ranks now, before they have started"),
    launch_json: Optional[Path] = typer.Option(None, "--launch-json", dir_okay=False, rich_help_panel=o.VSCODE,
                                               help="launch.json to write (default: <workspace>/.vscode/launch.json)"),
    no_launch_json: bool = typer.Option(False, "--no-launch-json", rich_help_panel=o.VSCODE, help="do not write launch.json"),
    local_root: str = typer.Option("${workspaceFolder}", "--local-root", rich_help_panel=o.VSCODE,
                                   help="local source root for pathMappings"),
    remote_root: Optional[str] = typer.Option(None, "--remote-root", rich_help_panel=o.VSCODE,
                                              help="source root on the ranks (default: inferred where possible)"),
    just_my_code: Optional[bool] = typer.Option(
        None, "--just-my-code/--no-just-my-code", rich_help_panel=o.VSCODE,
        help="write justMyCode into the attach configs (default: not written, so your VS Code setting "
             "debugpy.debugJustMyCode applies)"),
    job_ranks: str = typer.Option("all", "--job-ranks", metavar="RANKS", rich_help_panel=o.VSCODE,
                                  help="ranks the \"dbgfwd: job\" session attaches by itself: all, none, or e.g. 0 "
                                       "(rank 0 now; the others with `dbgfwd attach-rank N`)"),
    no_job_session: bool = typer.Option(False, "--no-job-session", rich_help_panel=o.VSCODE,
                                        help="do not serve the job session (no \"dbgfwd: job\" config)"),
    allow_user: Optional[List[str]] = typer.Option(None, "--allow-user", metavar="USER", rich_help_panel=o.ACCESS,
                                                   help="also serve connections from this local user (name or "
                                                        "uid; repeatable). By default only your own processes "
                                                        "can use the forwards"),
    allow_group: Optional[List[str]] = typer.Option(None, "--allow-group", metavar="GROUP", rich_help_panel=o.ACCESS,
                                                    help="also serve connections from members of this group"),
    bind: str = typer.Option("127.0.0.1", "--bind", rich_help_panel=o.ACCESS, help="address the forwards listen on (only change this "
                                                          "if you know who can reach it)"),
    client_wait: float = typer.Option(60.0, "--client-wait", min=0, rich_help_panel=o.ACCESS,
                                      help="seconds a debugger connecting before its rank is up is held"),
    inject: bool = typer.Option(False, "--inject", rich_help_panel=INJECT,
                                help="the job was started without dbgfwd-rank: find its rank processes and start "
                                     "debugpy inside each running one (gdb, same user; no restart), then attach"),
    match: Optional[str] = typer.Option(None, "--match", metavar="PATTERN", rich_help_panel=INJECT,
                                        help="with --inject: only processes whose command line matches this "
                                             "regular expression (e.g. train.py)"),
    collective_timeout: Optional[str] = typer.Option(
        None, "--collective-timeout", metavar="DURATION", rich_help_panel=INJECT,
        help="with --inject: raise the timeout of the ranks' torch process groups to this (default 2h; keep: "
             "leave them), so a rank held at a breakpoint does not make the others fail"),
    list_only: bool = typer.Option(False, "--list", help="show what would be forwarded (with --inject: which "
                                                         "processes would be injected) and exit"),
    duration: Optional[float] = typer.Option(None, "--duration", min=0, hidden=True),
    workspace: Optional[Path] = o.Workspace,
    json_out: bool = o.Json,
    provider_options: dict = None,  # type: ignore[assignment]
) -> None:
    """Forward every rank's debugpy port to 127.0.0.1 and keep the forwards alive.

    Each rank gets a local listener that stays up for the whole session (ranks restarting or moving
    are served again on the same port), and one attach config in launch.json plus an "all ranks"
    compound. Runs until Ctrl-C; `dbgfwd status` and `dbgfwd wait` read its state.

    \b
    Examples:
      dbgfwd attach                                  # ranks on this machine
      dbgfwd attach --namespace nccl-test ml-dev-env # pods of a Kubernetes/OpenShift job
      dbgfwd attach pytorchjob/train -n ml           # every replica of a PyTorchJob
      dbgfwd attach --provider ssh node01 node02     # ranks on SSH hosts
      dbgfwd attach --provider batch <job-id>        # AWS Batch job through SSM
    """
    from dbgfwd.app.attach import run_attach
    from dbgfwd.app.options import AttachOptions

    ws = o.workspace_of(workspace)
    opts = AttachOptions(
        workspace=ws, provider=provider, targets=tuple(targets or ()), provider_options=provider_options or {},
        base_port=base_port, local_base_port=local_base_port, ranks_per_node=ranks_per_node,
        only=o.rank_set(only), expected_ranks=expected,
        launch_json=None if no_launch_json else (launch_json or ws / ".vscode" / "launch.json"),
        local_root=local_root, remote_root=remote_root, just_my_code=just_my_code, bind_host=bind,
        allow_users=tuple(allow_user or ()), allow_groups=tuple(allow_group or ()),
        client_wait=client_wait, duration=duration, verbose=console.verbosity,
        job_session=not no_job_session, job_ranks=o.job_rank_set(job_ranks),
    )
    if (match is not None or collective_timeout is not None) and not inject:
        from dbgfwd.errors import UsageError

        raise UsageError("--match and --collective-timeout go with --inject",
                         hint="add --inject to start debugpy inside the running ranks")
    injected = None
    if inject:
        from dbgfwd.app import inject as injection
        from dbgfwd.ui.inject import show_inject

        how = injection.InjectOptions(match=match, dry_run=list_only, collective_timeout=collective_timeout)
        injection.check(how, opts)
        from dataclasses import replace

        from dbgfwd.app.options import validate

        if not list_only:  # a bad workspace or launch.json is said before any process is touched (attach
            validate(replace(opts, bind_host="127.0.0.1"), console)  # warns about --bind itself, once)
        results = injection.run_inject(opts, how, console)
        injected = [r.as_dict() for r in results]
        show_inject(console, results, dry_run=list_only)
        injection.require_some(results, list_only)
        if not list_only:
            injection.save(ws, results)
        ok, bad, pending = injection.summary(results)
        if list_only:
            if console.json:
                console.emit_json({"inject": injected})
            return
        if not ok and not pending:
            from dbgfwd.errors import NotInjectedError

            raise NotInjectedError(f"no rank could be made debuggable ({bad} failed or skipped)",
                                   hint="see each rank's reason above")
    if list_only:
        from dbgfwd.app.discover import discover
        from dbgfwd.ui.listing import show_listing

        from dbgfwd.errors import NotFoundError

        found = discover(opts, console)
        show_listing(console, found)
        if not found.targets:
            raise NotFoundError(f"nothing found: looked {found.where}",
                                hint="start the ranks (dbgfwd-rank), or check the target spec and --base-port")
        return
    from dbgfwd.ui.live import LiveView

    live = LiveView(console, extra={"inject": injected} if injected is not None else None)
    run_attach(opts, console, on_ready=live.start)
    live.stop()


def register(app: typer.Typer) -> None:
    app.command("attach")(attach)
