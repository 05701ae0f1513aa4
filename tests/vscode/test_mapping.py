"""Will breakpoints bind? The rank's program, mapped back through pathMappings, must exist locally."""

from __future__ import annotations

from dbgfwd.vscode.mapping import check


def _project(tmp_path):
    (tmp_path / "repo" / "pkg").mkdir(parents=True)
    (tmp_path / "repo" / "train.py").write_text("")
    (tmp_path / "repo" / "pkg" / "train.py").write_text("")
    return tmp_path / "repo"


def test_a_mapping_that_finds_the_program_is_silent(tmp_path):
    ws = _project(tmp_path)
    assert check(ws, "${workspaceFolder}", "/workspace", "/workspace", "train.py") is None
    assert check(ws, "${workspaceFolder}", "/workspace", "/workspace", "pkg.train") is None  # python -m
    assert check(ws, "${workspaceFolder}", None, "/workspace", "train.py") is None  # no mapping to judge


def test_the_parent_folder_opened_suggests_the_local_root_that_works(tmp_path):
    _project(tmp_path)
    said = check(tmp_path, "${workspaceFolder}", "/workspace", "/workspace", "train.py")
    assert said.startswith("breakpoints in train.py will not bind: there is no train.py under ${workspaceFolder}")
    assert "--local-root '${workspaceFolder}/repo'" in said


def test_no_such_file_anywhere_says_what_to_do(tmp_path):
    ws = _project(tmp_path)
    said = check(ws, "${workspaceFolder}", "/workspace", "/workspace", "scripts/finetune.py")
    assert "no scripts/finetune.py under ${workspaceFolder}" in said and "--local-root/--remote-root" in said


def test_the_image_workdir_is_not_where_the_program_is(tmp_path):
    """Kubernetes: the container's workingDir (/opt/app-root/src) while the user ran
    `cd /workspace && torchrun train.py`: a root that does not hold the program is said so."""
    ws = _project(tmp_path)
    said = check(ws, "${workspaceFolder}", "/opt/app-root/src", "/workspace", "train.py")
    assert "outside the source root /opt/app-root/src" in said and "--remote-root" in said


def test_installed_package_code_is_said_not_to_bind(tmp_path):
    ws = _project(tmp_path)
    said = check(ws, "${workspaceFolder}", "/workspace", "/workspace",
                 "/usr/lib/python3/site-packages/trainer/main.py")
    assert "site-packages" in said and "outside the source root /workspace" in said
