"""The workspace's port memory: rank -> local port, so launch.json stays valid across runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from dbgfwd.errors import BadFileError
from dbgfwd.fsutil import atomic_write_text
from dbgfwd.plan.layout import PlannedRank
from dbgfwd.workspace.state import ensure_state_dir, ports_path


class PortMemory:
    """rank -> local port remembered in `<workspace>/.dbgfwd/ports.json` (0600, atomic)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def of(cls, workspace: Path) -> "PortMemory":
        return cls(ports_path(Path(workspace)))

    def _data(self) -> dict:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            {int(k): int(v) for k, v in data.get("ports", {}).items()}
            int(data.get("job") or 0)
            return data
        except (ValueError, AttributeError, TypeError) as exc:
            raise BadFileError(self.path, f"not a dbgfwd port map ({exc})",
                               hint="delete it; ports will be chosen afresh") from None

    def load(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self._data().get("ports", {}).items()}

    def load_job(self) -> int | None:
        """The job session's local port last used in this workspace."""
        return int(self._data().get("job") or 0) or None

    def save(self, planned: Iterable[PlannedRank]) -> None:
        ports = self.load()
        for p in planned:
            ports[p.rank] = p.local_port
        self._write(ports, self.load_job())

    def save_job(self, port: int) -> None:
        self._write(self.load(), port)

    def _write(self, ports: dict[int, int], job: int | None) -> None:
        data = {"version": 1, "ports": {str(k): v for k, v in sorted(ports.items())}}
        if job:
            data["job"] = job
        if self.path.parent.name == ".dbgfwd":
            ensure_state_dir(self.path.parent.parent)
        atomic_write_text(self.path, json.dumps(data, indent=2) + "\n", mode=0o600)
