"""The in-rank side: the `dbgfwd-rank` launcher and what it does inside a rank.

`env` reads the rank from the launcher's environment, `debuggee` starts debugpy (`nodelay` makes its
requests fast), `collectives` keeps torch collectives waiting while a rank is paused. Standard library and
debugpy only: this package runs in training images that have nothing else of dbgfwd's dependencies.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """Entry point of `dbgfwd-rank` and `python -m dbgfwd.rank`."""
    from dbgfwd.rank.launcher import main as launch

    launch(argv)
