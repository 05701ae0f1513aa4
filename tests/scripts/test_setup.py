"""scripts/setup.sh (run by demo.sh on every start) does nothing when the venv is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import require

ROOT = Path(__file__).resolve().parents[2]


def test_setup_skips_pip_when_the_venv_is_current():
    venv_python = ROOT / ".venv" / "bin" / "python"
    if Path(sys.executable).resolve() != venv_python.resolve() or not (ROOT / ".venv" / ".dbgfwd-setup-test").exists():
        require.missing("the suite does not run from the .venv that scripts/setup.sh test made")
    res = subprocess.run(["bash", "scripts/setup.sh", "test"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "setting up" not in res.stderr and res.stdout == "", res.stderr  # no pip run at all
