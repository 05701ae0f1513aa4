"""The `dbgfwd` command: a typer app whose commands are thin modules in this package.

`main()` is the one exit path: a DbgfwdError becomes one stderr line and its ExitCode; anything
else is a bug, shown as one line (traceback with --debug or DBGFWD_DEBUG=1).
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from dbgfwd import __version__, envvars
from dbgfwd.errors import DbgfwdError, ExitCode
from dbgfwd.ui.console import console

HELP = f"""Forward every rank of a remote distributed Python job to VS Code.

dbgfwd finds the ranks of a job (local processes, SSH hosts, Kubernetes pods, AWS Batch jobs),
forwards each rank's debugpy port to 127.0.0.1 on a stable local port, keeps the forwards alive,
and writes one VS Code attach config per rank plus an "all ranks" compound.

\b
Start here:  dbgfwd demo            (local ranks, nothing to set up)
             dbgfwd attach --help   (your job)

\b
Exit codes:
{ExitCode.describe()}

\b
Environment:
{envvars.help_text()}
"""

class _App(typer.Typer):
    """Every command's help groups its options under headings (see dbgfwd.cli.help)."""

    def command(self, *args, **kwargs):
        from dbgfwd.cli.help import GroupedCommand

        kwargs.setdefault("cls", GroupedCommand)
        return super().command(*args, **kwargs)


# Each command: the module under dbgfwd.cli that registers it, and the first sentence of its help (what
# `dbgfwd --help` lists; tests/cli/test_commands.py holds it to the command's own help). A command's module is
# imported, and its click command built, only when that command runs or completes: `dbgfwd status` does not
# pay for building the options of the nine others.
COMMANDS = {
    "ranks": ("ranks", "Plan the port map: rank -> node, local rank, remote port (base + local rank), local port."),
    "attach": ("attach", "Forward every rank's debugpy port to 127.0.0.1 and keep the forwards alive."),
    "attach-rank": ("attach_rank", 'Attach the debugger to more ranks, under the "dbgfwd: job" session already '
                                   "running in VS Code."),
    "ls": ("ls", "List the targets and ranks `dbgfwd attach` would forward, with where each runs."),
    "status": ("status", "Show every rank's target, ports, state and traffic from the running `dbgfwd attach`."),
    "wait": ("wait", "Exit 0 once every (chosen) rank of the running attach is ready; exit 7 on timeout."),
    "stacks": ("stacks", "Show the Python stack of every rank, taken at nearly the same moment, without stopping "
                         "the job."),
    "gen-launch": ("gen_launch", "Write one attach config per rank, a 'dbgfwd: all ranks' compound and its wait "
                                 "task into .vscode/launch.json and .vscode/tasks.json."),
    "snippet": ("snippet", "Print lines to paste into a program that cannot run under dbgfwd-rank."),
    "demo": ("demo", "Start N ranks of a small training loop, forward them, and write launch.json."),
}


def load_command(name: str):
    """The click command `name`, built from its module (see COMMANDS)."""
    import importlib

    from typer.main import get_command_from_info

    module = importlib.import_module(f"dbgfwd.cli.{COMMANDS[name][0]}")
    one = _App()
    module.register(one)
    (info,) = one.registered_commands
    return get_command_from_info(info, pretty_exceptions_short=app.pretty_exceptions_short,
                                 rich_markup_mode=app.rich_markup_mode)


class _Commands(dict):
    """The group's commands by name: every name is known from the start, each command is built on first use."""

    def __init__(self) -> None:
        super().__init__(dict.fromkeys(COMMANDS))

    def __getitem__(self, name):
        command = super().__getitem__(name)
        if command is None:
            command = load_command(name)
            super().__setitem__(name, command)
        return command

    def get(self, name, default=None):
        return self[name] if name in self else default

    def values(self):
        return [self[name] for name in self]

    def items(self):
        return [(name, self[name]) for name in self]


class _Group(TyperGroup):
    """The `dbgfwd` group: commands built lazily, and listed by `--help` from COMMANDS without building one."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.commands = _Commands()

    def format_commands(self, ctx, formatter) -> None:
        from typer._click.utils import make_default_short_help

        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        with formatter.section("Commands"):
            formatter.write_dl([(name, make_default_short_help(summary, limit))
                                for name, (_, summary) in COMMANDS.items()])


app = _App(
    name="dbgfwd",
    help=HELP,
    cls=_Group,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,  # locals can hold tokens: never print them
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        console.out.print(f"dbgfwd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: int = typer.Option(0, "-v", "--verbose", count=True,
                                help="more detail on stderr (-v info, -vv debug incl. SDK logs; secrets redacted)"),
    debug: bool = typer.Option(False, "--debug", help="print a traceback on errors"),
    no_color: bool = typer.Option(False, "--no-color", help="no colour (also NO_COLOR=1)"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
) -> None:
    console.configure(verbosity=verbose, debug=debug, no_color=no_color)


def _install() -> None:
    from dbgfwd.cli import fast

    fast.install()


_install()


def _click_classes(name: str) -> tuple[type, ...]:
    """`name` from click and from the click copy newer typer releases vendor (both may be in play)."""
    import importlib

    found = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        if module == "click.exceptions" and "click" not in sys.modules:
            continue  # nothing imported click, so nothing can raise its exceptions (and importing it costs ~10 ms)
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if cls is not None and cls not in found:
            found.append(cls)
    return tuple(found)


_NO_ARGS = _click_classes("NoArgsIsHelpError")
_USAGE = _click_classes("UsageError")
_EXIT = _click_classes("Exit")
_ABORT = _click_classes("Abort")
_CLICK = _click_classes("ClickException")


_GLOBAL_FLAGS = ("--verbose", "--debug", "--no-color")


def _is_global_flag(token: str) -> bool:
    return token in _GLOBAL_FLAGS or (len(token) > 1 and token[0] == "-" and set(token[1:]) == {"v"})


def _hoist_global_options(args: list[str]) -> list[str]:
    """`dbgfwd attach -v` works like `dbgfwd -v attach` (the kubectl/aws habit): the global flags found
    after the command name (and before a `--`) are moved in front of it."""
    names = set(app_command_names())
    for i, token in enumerate(args):
        if token in names:
            head, tail = args[:i], args[i + 1:]
            cut = tail.index("--") if "--" in tail else len(tail)
            moved = [t for t in tail[:cut] if _is_global_flag(t)]
            rest = [t for t in tail[:cut] if not _is_global_flag(t)] + tail[cut:]
            return head + moved + [token] + rest
        if not token.startswith("-"):
            break
    return args


def app_command_names() -> list[str]:
    return list(COMMANDS)


def main(argv: list[str] | None = None) -> None:
    """The `dbgfwd` entry point: runs the command on a worker thread so that Ctrl-C, SIGTERM and SIGHUP
    are served at any moment (see `dbgfwd.app.lifecycle`), and exits with the documented code."""
    from dbgfwd import lifecycle

    args = sys.argv[1:] if argv is None else argv
    sys.exit(lifecycle.run_command(lambda: _run(args)))


def _run(args: list[str]) -> int:
    """Run one command; every outcome becomes an exit code (DbgfwdError: one stderr line and its code)."""
    from dbgfwd import lifecycle

    try:
        returned = app(args=_hoist_global_options(args), prog_name="dbgfwd", standalone_mode=False)
    except DbgfwdError as exc:
        if lifecycle.stop_requested():  # the failure is the interruption's doing (a socket closed under it)
            return int(lifecycle.exit_code() or ExitCode.INTERRUPTED)
        if console.debug:
            console.traceback()
        console.error(exc.message, exc.hint)
        return int(exc.code)
    except _NO_ARGS as exc:  # `dbgfwd` alone: help, exit 0... as click does
        console.err.print(exc.format_message() if hasattr(exc, "format_message") else str(exc))
        return int(ExitCode.USAGE)
    except _USAGE as exc:
        cmd = exc.ctx.command_path if exc.ctx else "dbgfwd"
        from dbgfwd.cli.help import plain

        console.error(plain(exc.format_message(), args), f"see `{cmd} --help`")
        return int(ExitCode.USAGE)
    except _EXIT as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except _ABORT + (KeyboardInterrupt,):
        return int(ExitCode.INTERRUPTED)
    except _CLICK as exc:
        console.error(exc.format_message())
        return int(ExitCode.USAGE)
    except Exception as exc:  # a bug: one line unless --debug
        if lifecycle.stop_requested():
            return int(lifecycle.exit_code() or ExitCode.INTERRUPTED)
        if console.debug:
            console.traceback()
        console.error(f"unexpected {type(exc).__name__}: {exc}", "rerun with --debug and report it")
        return int(ExitCode.ERROR)
    # typer under standalone_mode=False returns the code of an Abort/Exit it handled itself
    return int(returned) if isinstance(returned, int) and not isinstance(returned, bool) else 0
