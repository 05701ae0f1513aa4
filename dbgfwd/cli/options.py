"""Options shared by several commands, and the provider options grafted onto attach/ls."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from dbgfwd import envvars

Workspace = typer.Option(None, "--workspace", "-w", envvar=envvars.WORKSPACE, file_okay=False,
                         help="workspace folder holding .dbgfwd/ and .vscode/ (default: current directory)")
def _json_mode(value: bool) -> bool:
    """--json switches the one console to JSON output (its messages go to stderr, the document to stdout)."""
    from dbgfwd.ui.console import console

    console.json = bool(value)
    return value


Json = typer.Option(False, "--json", callback=_json_mode, help="print machine-readable JSON on stdout")
PORTS = "Ports and ranks"
VSCODE = "VS Code"
ACCESS = "Who may connect"
BasePort = typer.Option(5678, "--base-port", envvar=envvars.BASE_PORT, min=1, max=65535, rich_help_panel=PORTS,
                        help="remote debugpy port of local rank 0; rank r listens on base + local rank")
LocalBasePort = typer.Option(None, "--local-base-port", min=1, max=65535, rich_help_panel=PORTS,
                             help="local port of rank 0 (rank r gets local base + r when free); "
                                  "default: the base port (the local provider: base + 1000). "
                                  "When given, every such port must be free")
RanksPerNode = typer.Option(None, "--ranks-per-node", min=1, rich_help_panel=PORTS,
                            help="ranks on each node/host/pod (default: read from the ranks' markers)")
Only = typer.Option(None, "--only", metavar="RANKS", rich_help_panel=PORTS, help="forward only these ranks, e.g. 0,2-3")


def provider_option_params() -> list[inspect.Parameter]:
    """Typer parameters for every registered provider's ProviderOptions, in a panel per provider."""
    from dbgfwd import providers

    params: list[inspect.Parameter] = []
    seen: set[str] = set()
    for _name, title, options in providers.all_options():
        for opt in options:
            if opt.key in seen:
                # Two providers may share an option (same key, e.g. "region"): declare it once.
                continue
            seen.add(opt.key)
            annotation: Any = opt.type
            default = opt.default
            if opt.multiple:
                annotation = Optional[List[opt.type]]  # type: ignore[valid-type]
                default = None
            elif opt.type is not bool:
                annotation = Optional[opt.type]
            params.append(inspect.Parameter(
                opt.key, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                default=typer.Option(default, *opt.flags, help=opt.help, envvar=opt.envvar, metavar=opt.metavar,
                                     min=opt.min, autocompletion=_completer(opt.complete),
                                     rich_help_panel=title, show_default=opt.type is not bool and default is not None),
            ))
    return params


def _completer(name: str | None):
    if not name:
        return None
    from dbgfwd.cli import complete

    return getattr(complete, name)


def with_provider_options(func: Callable) -> Callable:
    """Add every provider's options to a command; they arrive as `provider_options: dict`."""
    extra = provider_option_params()
    keys = [p.name for p in extra]
    sig = inspect.signature(func)
    base = [p for p in sig.parameters.values() if p.name != "provider_options"]

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        values = {k: kwargs.pop(k) for k in keys if k in kwargs}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()}
        return func(provider_options=values, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=base + extra)  # type: ignore[attr-defined]
    return wrapper


def rank_set(text: Optional[str]):
    from dbgfwd.plan.ranksets import parse_rank_set

    return parse_rank_set(text) if text else None


def job_rank_set(text: str):
    """--job-ranks: "all" (None: every rank), "none" (no rank by itself), or a rank set such as 0 or 0-3."""
    value = (text or "all").strip().lower()
    if value == "all":
        return None
    if value == "none":
        return frozenset()
    return frozenset(rank_set(text))


def workspace_of(path: Optional[Path]) -> Path:
    """The workspace folder: --workspace, $DBGFWD_WORKSPACE, else the current folder. One that is named must
    exist (a typo must not create a tree): NotFoundPathError otherwise."""
    from dbgfwd.workspace.state import check_workspace, workspace_dir

    ws = workspace_dir(path)
    check_workspace(ws)
    return ws
