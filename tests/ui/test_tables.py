"""The rank table keeps rank, local port and state whole at any width, and every reason in full."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from dbgfwd.ui.tables import rank_table

REASON = ("cannot open a stream to port 5679: the pod ml-dev-env-worker-3 was replaced by "
          "ml-dev-env-worker-3-7f9c (restart 4); waiting for its marker")


def _rows(n: int = 3) -> list[dict]:
    return [{"rank": r, "target_name": f"ml-dev-env-pytorchjob-worker-{r}.nccl-test.svc.cluster.local",
             "local_rank": r % 2, "remote_port": 5678 + r % 2, "local_port": 15678 + r,
             "state": "reconnecting" if r == 1 else "connected", "clients": 1, "bytes_up": 2048,
             "bytes_down": 10 ** 7, "reason": REASON if r == 1 else ""} for r in range(n)]


@pytest.mark.parametrize("width", [40, 60, 80, 120, 250])
def test_rank_state_and_local_port_are_whole_at_any_width(width):
    out = Console(file=io.StringIO(), width=width, color_system=None)
    out.print(rank_table(_rows(), title="dbgfwd attach (kubernetes), pid 4242"))
    text = out.file.getvalue()
    for r in range(3):
        assert (f"127.0.0.1:{15678 + r}" if width >= 60 else f" {15678 + r} ") in text, text
    assert "reconnecting" in text and text.count("connected") == 2
    assert max(len(line) for line in text.splitlines()) <= width
    # the reason is there in full (wrapped lines joined back)
    flat = "".join(line.strip() for line in text.splitlines())
    assert REASON.replace(" ", "") in flat.replace(" ", ""), text


def test_wide_terminal_shows_every_column_and_the_reason_beside():
    out = Console(file=io.StringIO(), width=400, color_system=None)
    out.print(rank_table(_rows(), title="t"))
    text = out.file.getvalue()
    assert "traffic" in text and "local rank" in text and "ml-dev-env-pytorchjob-worker-2.nccl-test" in text
    assert f"rank 1: {REASON}" not in text and REASON in text
