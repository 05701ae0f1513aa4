"""`ls` says when the ranks' program will not be found under the workspace (breakpoints would not bind)."""

from __future__ import annotations

from dbgfwd.app.discover import Listing
from dbgfwd.rank.markers import Marker, ProbeResult


def test_ls_warns_when_the_ranks_program_is_not_in_the_workspace(tmp_path, capsys):
    from dbgfwd.cli.ls import _say_binding

    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "train.py").write_text("")
    probe = ProbeResult(markers=(Marker(rank=0, local_rank=0, port=5678, pid=7, cwd="/workspace",
                                        argv=("train.py", "--epochs", "3")),))
    _say_binding(Listing("kubernetes", "in namespace ml", [], [], {"pod-0": probe}), tmp_path)
    err = capsys.readouterr().err
    assert "breakpoints in train.py will not bind" in err and "--local-root '${workspaceFolder}/repo'" in err
    _say_binding(Listing("kubernetes", "in namespace ml", [], [], {"pod-0": probe}), tmp_path / "repo")
    assert capsys.readouterr().err == ""
