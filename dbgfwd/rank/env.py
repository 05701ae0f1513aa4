"""Which rank am I? Read from the environments launchers set.

The table `SOURCES` is the single definition of the lookup order; the rank launcher and the in-code
snippet (`dbgfwd snippet`) both follow it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class RankSource:
    name: str
    rank: str  # env var holding the global rank
    local_rank: str | None  # env var holding the rank within its node (None: always 0)
    world_size: str | None = None


# First match wins. torchrun goes first because it also runs under Slurm/MPI allocations, where the
# outer launcher's variables describe the node, not the worker process.
SOURCES: tuple[RankSource, ...] = (
    RankSource("torchrun", "RANK", "LOCAL_RANK", "WORLD_SIZE"),
    RankSource("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE"),
    RankSource("pmix", "PMIX_RANK", "MPI_LOCALRANKID", None),
    RankSource("pmi", "PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE"),
    RankSource("slurm", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"),
    RankSource("k8s-indexed-job", "JOB_COMPLETION_INDEX", None, None),
    RankSource("aws-batch", "AWS_BATCH_JOB_NODE_INDEX", None, "AWS_BATCH_JOB_NUM_NODES"),
)


@dataclass(frozen=True)
class RankEnv:
    rank: int
    local_rank: int
    world_size: int | None
    source: str  # a RankSource.name, or "default" when nothing was set


def _int(environ: Mapping[str, str], key: str | None) -> int | None:
    if not key:
        return None
    raw = environ.get(key)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def detect(environ: Mapping[str, str] | None = None) -> RankEnv | None:
    """The rank described by `environ`, or None when no known launcher variable is set."""
    env = os.environ if environ is None else environ
    for src in SOURCES:
        rank = _int(env, src.rank)
        if rank is None:
            continue
        local = _int(env, src.local_rank)
        if local is None:
            local = 0
        return RankEnv(rank=rank, local_rank=local, world_size=_int(env, src.world_size), source=src.name)
    return None


def detect_or_default(environ: Mapping[str, str] | None = None) -> RankEnv:
    return detect(environ) or RankEnv(rank=0, local_rank=0, world_size=None, source="default")
