"""Where a process learns its rank: the variables `tracegrad launch` and torchrun set (RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE), Open MPI's `mpirun` (OMPI_COMM_WORLD_*), MPICH's
`mpiexec` (PMI_*, MPI_LOCALRANKID) and Slurm's `srun` (SLURM_*), first found wins."""
from __future__ import annotations

import os
from dataclasses import dataclass

# (rank, world size, local rank, local world size) per launcher, in the order they are tried
_SOURCES = (
    ("tracegrad launch / torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    ("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("MPICH", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ("Slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
)


@dataclass(frozen=True)
class RankEnv:
    """(rank, world_size, local_rank, local_world_size) and which launcher said so."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    source: str = "none"

    def __getitem__(self, i):
        return (self.rank, self.world_size, self.local_rank, self.local_world_size, self.source)[i]


def _int(value: str | None, default: int) -> int:
    try:
        return int(str(value).split("(")[0].split(",")[0])    # SLURM_NTASKS_PER_NODE may read "2(x3)"
    except (TypeError, ValueError):
        return default


def rank_env(environ=None) -> RankEnv:
    """This process' place among the ranks, from its launcher's variables (one rank when none)."""
    env = os.environ if environ is None else environ
    for source, rank, size, local, local_size in _SOURCES:
        if rank in env and size in env:
            r, n = _int(env[rank], 0), _int(env[size], 1)
            return RankEnv(r, n, _int(env.get(local), r), _int(env.get(local_size), n), source)
    return RankEnv()


def started_by_mpi(environ=None) -> bool:
    env = os.environ if environ is None else environ
    return any(k in env for k in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "TRACEGRAD_MPI"))
