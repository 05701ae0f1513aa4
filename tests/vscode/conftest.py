from pathlib import Path

import pytest

from dbgfwd.vscode import AttachEntry

FIXTURES = Path(__file__).parent / "fixtures"


def entries(n: int, per_node: int = 2, base: int = 6000, remote_root: str | None = None) -> list[AttachEntry]:
    return [AttachEntry(rank=r, local_port=base + r, node=f"worker-{r // per_node}", local_rank=r % per_node,
                        remote_root=remote_root) for r in range(n)]


@pytest.fixture
def vscode_dir(tmp_path) -> Path:
    d = tmp_path / ".vscode"
    d.mkdir()
    return d


def fixture_bytes(name: str, crlf: bool = False) -> bytes:
    data = (FIXTURES / name).read_bytes()
    return data.replace(b"\n", b"\r\n") if crlf else data
