"""Help text for people who have never seen dbgfwd: options grouped under headings, values named in words.

Typer's rich help renders `[user@]host` as markup, so dbgfwd keeps click's plain formatter and does the
grouping itself: an option's `rich_help_panel` names its heading ("Ports and ranks", "SSH hosts", ...).
Options without one go under "Options". Metavars typer would show as `<int range>` get words instead.
"""

from __future__ import annotations

import re

from typer.core import TyperCommand

# Words for typer's type-named metavars, by option name (the same name means the same thing everywhere).
METAVARS = {
    "--base-port": "PORT", "--local-base-port": "PORT", "--ranks-per-node": "N", "--ranks": "N",
    "--client-wait": "SECONDS", "--timeout": "SECONDS", "--duration": "SECONDS", "--bind": "ADDRESS",
    "--provider": "NAME", "--local-root": "PATH", "--remote-root": "PATH", "--launch-json": "FILE",
    "--workspace": "DIR", "--runtime-dir": "DIR", "--kubeconfig": "FILE", "--context": "NAME",
    "--namespace": "NAMESPACE", "--selector": "SELECTOR", "--container": "NAME", "--profile": "NAME",
    "--region": "REGION", "--compound": "RANKS", "--rank": "N", "--identity": "FILE", "--hostfile": "FILE",
    "--ssh-config": "FILE",
}
_TYPE_METAVAR = re.compile(r"^<[^>]+>$|^[A-Z_]+ RANGE$|^(INTEGER|FLOAT|TEXT|DIRECTORY)$")


class GroupedCommand(TyperCommand):
    """Options under one heading per `rich_help_panel`, in the order the headings first appear."""

    def format_options(self, ctx, formatter) -> None:
        args, groups = [], {}
        for param in self.get_params(ctx):
            _name_metavar(param)
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                args.append(record)
            else:
                groups.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        general = groups.pop("Options", [])
        for title, rows in [("Options", general), *groups.items()]:
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _name_metavar(param) -> None:
    if param.param_type_name == "argument":
        if not param.metavar or _TYPE_METAVAR.match(param.metavar.split("...")[0].strip()):
            param.metavar = param.name.upper().rstrip("S") + ("..." if param.nargs != 1 else "")
        return
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return
    current = param.metavar
    if current and not _TYPE_METAVAR.match(current):
        return
    for opt in param.opts:
        if opt in METAVARS:
            param.metavar = METAVARS[opt]
            return
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", None) or getattr(getattr(param, "type", None), "name", "")
    name = getattr(annotation, "__name__", str(annotation)).lower()
    param.metavar = {"int": "N", "integer": "N", "float": "NUMBER", "path": "PATH"}.get(name, "TEXT")


_RANGES = [
    (re.compile(r"(-?\d+(?:\.\d+)?) is not in the range (-?\d+(?:\.\d+)?)<=x<=(-?\d+(?:\.\d+)?)\."),
     r"must be from \2 to \3 (got \1)."),
    (re.compile(r"(-?\d+(?:\.\d+)?) is not in the range x>=(-?\d+(?:\.\d+)?)\."), r"must be at least \2 (got \1)."),
    (re.compile(r"(-?\d+(?:\.\d+)?) is not in the range x<=(-?\d+(?:\.\d+)?)\."), r"must be at most \2 (got \1)."),
    (re.compile(r"'([^']*)' is not a valid integer\."), r"must be a whole number (got '\1')."),
    (re.compile(r"'([^']*)' is not a valid float\."), r"must be a number (got '\1')."),
]


_PHRASES = [  # typer's own (pydantic-styled) validation messages
    (re.compile(r"Input should be greater than or equal to (\S+)"), r"must be at least \1"),
    (re.compile(r"Input should be less than or equal to (\S+)"), r"must be at most \1"),
    (re.compile(r"Input should be greater than (\S+)"), r"must be more than \1"),
    (re.compile(r"Input should be less than (\S+)"), r"must be less than \1"),
    (re.compile(r"Input should be a valid integer.*"), "must be a whole number"),
    (re.compile(r"Input should be a valid number.*"), "must be a number"),
    (re.compile(r" \(env var: '([^']+)'\)"), r" (from $\1)"),
]


def plain(message: str, args: list[str] | None = None) -> str:
    """Validation messages in plain words: "--base-port must be at most 65535 (got 70000)"."""
    for pattern, repl in _RANGES + _PHRASES:
        message = pattern.sub(repl, message)
    message = message.replace("Invalid value for ", "")
    typed = re.match(r"((?:'-[^']+'(?: / )?)+) \(from \$\w+\)(: .*)$", message, re.S)
    if typed and any(_given(n, args or []) is not None for n in re.findall(r"'(-[^']+)'", typed.group(1))):
        message = typed.group(1) + typed.group(2)  # typer names the env var even when the value was typed
    m = re.match(r"'([^']+)'(.*?): (must .*)$", message)
    if m:
        name, source, rule = m.groups()
        given = _given(name, args or [])
        if given is not None:
            source = ""  # typer names the env var whenever the option has one; it came from the command line
        message = f"{name if name.startswith('-') else name.upper()}{source} {rule}" + \
            (f" (got {given!r})" if given is not None and "(got" not in rule else "")
    return message


def _given(option: str, args: list[str]) -> str | None:
    """The value the user gave `option` on the command line, to echo it back."""
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None
