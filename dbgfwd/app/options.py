"""What `attach` (and `ls`) are asked to do, checked, and turned into a provider and an engine."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dbgfwd import providers
from dbgfwd.engine import Engine, EngineSettings, PlanSettings
from dbgfwd.errors import AuthError, UsageError
from dbgfwd.plan.ports import default_local_base
from dbgfwd.providers.base import Capability, ProviderConfig
from dbgfwd.ui.console import Console
from dbgfwd.vscode.writer import check_target
from dbgfwd.workspace.ports import PortMemory
from dbgfwd.workspace.state import check_workspace

log = logging.getLogger("dbgfwd.session")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class AttachOptions:
    workspace: Path
    provider: str | None = None
    targets: tuple[str, ...] = ()
    provider_options: Mapping[str, Any] = field(default_factory=dict)
    base_port: int = 5678
    local_base_port: int | None = None
    ranks_per_node: int | None = None
    only: frozenset[int] | None = None
    expected_ranks: int | None = None
    launch_json: Path | None = None  # None: do not write launch.json
    local_root: str = "${workspaceFolder}"
    remote_root: str | None = None
    just_my_code: bool | None = None  # None: leave it to the user's debugpy.debugJustMyCode setting
    bind_host: str = "127.0.0.1"
    allow_users: tuple[str, ...] = ()  # other local users (names or uids) whose connections are served
    allow_groups: tuple[str, ...] = ()  # ... or every member of these groups
    client_wait: float = 60.0
    duration: float | None = None  # stop by itself after this many seconds
    job_session: bool = True  # serve the job session ("dbgfwd: job" in launch.json)
    job_ranks: frozenset[int] | None = None  # ranks the job session attaches by itself (None: all)
    verbose: int = 0


def provider_config(opts: AttachOptions) -> ProviderConfig:
    return ProviderConfig(targets=opts.targets, options=dict(opts.provider_options), base_port=opts.base_port,
                          ranks_per_node=opts.ranks_per_node, verbose=opts.verbose)


def make_engine(opts: AttachOptions, on_plan_change=None, on_state_change=None) -> Engine:
    config = provider_config(opts)
    cls = providers.choose(opts.provider, config)
    provider = cls(config)
    shares = Capability.SHARES_LOCAL_PORTS in cls.capabilities
    ranks_per_node = opts.ranks_per_node
    notes = []
    if (ranks_per_node is None and opts.expected_ranks is None
            and Capability.OUT_OF_BAND_READINESS not in cls.capabilities):
        # No markers can be read through this provider, so nothing would ever say how many ranks a
        # node runs: plan one and say so (once discovery worked), rather than planning nothing in silence.
        ranks_per_node = 1
        notes.append(f"the {cls.name} provider cannot read rank markers: assuming 1 rank per node "
                     "(pass --ranks-per-node N for more)")
    local_base = opts.local_base_port
    if local_base is None:
        local_base = default_local_base(opts.base_port, shares)
    plan = PlanSettings(base_port=opts.base_port, local_base_port=local_base,
                        strict_local_ports=opts.local_base_port is not None, ranks_per_node=ranks_per_node,
                        only=opts.only, expected_ranks=opts.expected_ranks)
    settings = EngineSettings(bind_host=opts.bind_host, client_wait=opts.client_wait,
                              allowed_uids=allowed_uids(opts.allow_users, opts.allow_groups))
    memory = PortMemory.of(opts.workspace)
    engine = Engine(provider, plan, settings, memory, on_plan_change=on_plan_change,
                    on_state_change=on_state_change)
    engine.notes.extend(notes)
    return engine


def allowed_uids(users: tuple[str, ...], groups: tuple[str, ...]) -> frozenset[int]:
    """The uids named by --allow-user / --allow-group (names or numbers). UsageError for unknown ones."""
    if not users and not groups:
        return frozenset()
    import grp
    import pwd

    out: set[int] = set()
    for user in users:
        if user.isdigit():
            out.add(int(user))
            continue
        try:
            out.add(pwd.getpwnam(user).pw_uid)
        except KeyError:
            raise UsageError(f"--allow-user {user}: no such user", hint="give a user name or a uid") from None
    for group in groups:
        try:
            g = grp.getgrgid(int(group)) if group.isdigit() else grp.getgrnam(group)
        except KeyError:
            raise UsageError(f"--allow-group {group}: no such group", hint="give a group name or a gid") from None
        out |= {pwd.getpwnam(name).pw_uid for name in g.gr_mem if _has_user(name)}
        out |= {p.pw_uid for p in pwd.getpwall() if p.pw_gid == g.gr_gid}
    return frozenset(out)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def validate(opts: AttachOptions, console: Console) -> None:
    """Everything that can be checked before connecting anywhere; warnings only once nothing is fatal."""
    if opts.expected_ranks is not None and opts.expected_ranks < 1:
        raise UsageError("--ranks must be at least 1")
    check_workspace(opts.workspace)
    if opts.launch_json is not None:
        check_target(opts.launch_json)
        check_writable(opts.launch_json)
    if opts.bind_host not in LOOPBACK:
        console.warn(f"forwards will listen on {opts.bind_host}: anyone who reaches it can run code in your "
                     "ranks (debugpy has no authentication)")


def check_writable(launch_json: Path) -> None:
    """launch.json's folder (or, when .vscode/ is still to be made, the workspace) must let us write it."""
    import os

    folder = launch_json.parent if launch_json.parent.is_dir() else launch_json.parent.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise AuthError(f"cannot write {launch_json}: {folder} is not writable for you; nothing was written",
                        hint="make it writable, pass --launch-json somewhere writable, or --no-launch-json")

def options_record(opts: AttachOptions) -> dict:
    """The provider options as JSON values, for session.json (so `stacks` can reach the same targets)."""
    out = {}
    for key, value in opts.provider_options.items():
        if value is None or value is False or value == ():
            continue
        out[key] = [str(v) for v in value] if isinstance(value, tuple) else \
            value if isinstance(value, (bool, int, float)) else str(value)
    return out


def from_session(workspace: Path) -> AttachOptions | None:
    """The provider, targets and options of the attach running in `workspace`, if one is."""
    from dbgfwd.workspace import state

    session = state.read_session(workspace)
    if session is None or not session.alive or not session.data.get("provider"):
        return None
    data = session.data
    cls = providers.load(str(data["provider"]))
    declared = {o.key: o for o in cls.options}
    options: dict[str, Any] = {}
    for key, value in (data.get("provider_options") or {}).items():
        opt = declared.get(key)
        if opt is None:
            continue
        convert = opt.type if opt.type is not bool else bool
        options[key] = tuple(convert(v) for v in value) if opt.multiple else convert(value)
    return AttachOptions(workspace=workspace, provider=cls.name, targets=tuple(data.get("targets_spec") or ()),
                         provider_options=options, base_port=int(data.get("base_port") or 5678),
                         ranks_per_node=data.get("ranks_per_node"))
