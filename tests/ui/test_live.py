"""attach's live view off a terminal: a line per rank whose state changed, one line for many that changed alike."""

from __future__ import annotations

from types import SimpleNamespace

from dbgfwd.engine import RankState
from dbgfwd.ui.live import GROUP_FROM, change_lines


def _rank(n: int, state: RankState, reason: str = "") -> SimpleNamespace:
    return SimpleNamespace(planned=SimpleNamespace(rank=n, local_port=16000 + n, remote_port=5678 + n % 8),
                           target_name=f"train-worker-{n // 8}", state=state, reason=reason)


def test_a_few_changes_are_a_line_each_with_their_ports():
    lines = change_lines([_rank(3, RankState.READY), _rank(9, RankState.WAITING, "pod pending")])
    assert lines == ["rank 3 train-worker-0:5681 -> 127.0.0.1:16003 ready",
                     "rank 9 train-worker-1:5679 -> 127.0.0.1:16009 waiting (pod pending)"]


def test_many_ranks_changing_alike_are_one_line():
    # 1024 ranks becoming ready printed 1024 lines (each through the redaction patterns) in the first second.
    ranks = [_rank(n, RankState.READY) for n in range(1024) if n != 500]
    ranks += [_rank(500, RankState.WAITING, "pod pending")]
    assert change_lines(ranks) == ["ranks 0-499,501-1023 (1023) ready",
                                   "rank 500 train-worker-62:5682 -> 127.0.0.1:16500 waiting (pod pending)"]
    alike = [_rank(n, RankState.READY) for n in range(GROUP_FROM)]
    assert len(change_lines(alike)) == GROUP_FROM  # up to GROUP_FROM still a line each
