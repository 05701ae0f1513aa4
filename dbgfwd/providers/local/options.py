"""The local provider's command-line options (read by the CLI without importing the provider)."""

from __future__ import annotations

from pathlib import Path

from dbgfwd.providers.option import ProviderOption

TITLE = "Local"
OPTIONS = (
    ProviderOption("runtime_dir", ("--runtime-dir",), "where rank markers are (default "
                   "$DBGFWD_RUNTIME_DIR or /tmp/dbgfwd-<uid>)", type=Path),
)
