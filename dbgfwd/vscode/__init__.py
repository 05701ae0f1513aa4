"""VS Code integration: dbgfwd's attach configs, compounds and wait tasks, merged into JSONC files."""

from dbgfwd.vscode.generate import Generated, format_ranks, generate, owns_launch_entry, owns_task
from dbgfwd.vscode.model import AttachEntry, FileChange, LaunchOptions, WriteResult
from dbgfwd.vscode.writer import plan_changes, render_diff, update_launch_json

__all__ = [
    "AttachEntry", "FileChange", "Generated", "LaunchOptions", "WriteResult", "format_ranks", "generate",
    "owns_launch_entry", "owns_task", "plan_changes", "render_diff", "update_launch_json",
]
