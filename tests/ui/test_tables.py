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


def _job(n: int) -> list[dict]:
    rows = []
    for r in range(n):
        state = {7: "failed", 300: "connected", 301: "connected", 512: "reconnecting"}.get(r, "ready")
        if 900 <= r < 964:
            state = "waiting"
        rows.append({"rank": r, "target_name": f"node{r // 8}", "local_rank": r % 8, "remote_port": 5678 + r % 8,
                     "local_port": 20000 + r, "state": state, "clients": int(state == "connected"),
                     "reason": {7: "port 5685 is held by uid 1001, not by your rank: not connecting",
                                512: "node64: connection reset (since 10:01:02; dbgfwd keeps trying)"}.get(r, "")})
    return rows


def test_1024_ranks_are_a_line_per_state_and_the_ranks_worth_a_look():
    from dbgfwd.ui.tables import rank_view

    out = Console(file=io.StringIO(), width=100, color_system=None)
    out.print(rank_view(_job(1024), title="dbgfwd attach (local), pid 1"))
    text = out.file.getvalue()
    lines = text.splitlines()
    assert len(lines) < 30, text  # not 1024 rows
    assert max(len(line) for line in lines) <= 100
    by_state = {line.split()[0]: line.split()[1] for line in lines if line.split()
                and line.split()[0] in ("failed", "reconnecting", "waiting", "ready", "connected")}
    assert by_state == {"failed": "1", "reconnecting": "1", "waiting": "64", "ready": "956", "connected": "2"}
    assert "ranks 900-963" in text and "ranks 300-301" in text
    # the ranks worth a look, with their local ports and reasons whole: failed first, then connected
    assert "127.0.0.1:20007" in text and "held by uid 1001" in text and "127.0.0.1:20512" in text
    assert "127.0.0.1:20300" in text and "127.0.0.1:20301" in text
    assert text.index("127.0.0.1:20007") < text.index("127.0.0.1:20512") < text.index("127.0.0.1:20300")
    assert "127.0.0.1:20000 " not in text  # a ready rank has no row
    assert "1024 ranks" in text and "dbgfwd status --all" in text


def test_a_few_ranks_or_all_are_the_whole_table():
    from dbgfwd.ui.tables import RankTable, rank_view

    assert isinstance(rank_view(_job(32)), RankTable)
    assert isinstance(rank_view(_job(1024), full=True), RankTable)
    out = Console(file=io.StringIO(), width=100, color_system=None)
    out.print(rank_view(_job(100), full=True))
    assert all(f"127.0.0.1:{20000 + r}" in out.file.getvalue() for r in range(100))
