"""A provider's command-line options, declared apart from the provider itself.

The CLI builds the options of `attach` and `ls` for every provider on each start; reading them from
`dbgfwd/providers/<name>/options.py` (this dataclass and data only) keeps the provider modules, and what
they import, out of `dbgfwd --help` and every other command's start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProviderOption:
    """One provider-specific command-line option of `dbgfwd attach` / `dbgfwd ls`.

    `key` is the name the value is found under in `ProviderConfig.options`.
    """

    key: str
    flags: tuple[str, ...]  # e.g. ("-n", "--namespace")
    help: str
    type: type = str  # str, int, float, bool (a flag), pathlib.Path
    default: Any = None
    multiple: bool = False  # may be repeated; the value is then a tuple
    envvar: str | None = None
    metavar: str | None = None
    min: float | None = None  # smallest accepted value of an int/float option
    complete: str | None = None  # a completer in dbgfwd.cli.complete for shell completion of the value
