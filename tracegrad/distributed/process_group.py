"""The process group, as in `torch.distributed`: `init_process_group(backend)` makes this
process' communicator from its launcher's variables; `get_rank`, `get_world_size`, `barrier`,
`destroy_process_group`.

    tg.distributed.init_process_group(backend="auto")   # nccl on GPUs, mpi on CPUs
    rank, world = tg.distributed.get_rank(), tg.distributed.get_world_size()

Backends: "mpi" (mpi4py; ranks started by `tracegrad launch`, `mpiexec` or `srun`), "nccl"
(CuPy's NCCL, one GPU per rank, `cuda:<local rank>`; its unique id travels through MPI, or through
a TCP rendezvous at MASTER_ADDR:MASTER_PORT when ranks were started without MPI), "gloo" (what
PyTorch CPU scripts pass: taken as "mpi"), "auto" (nccl when CUDA is visible, else mpi).
"""
from __future__ import annotations

import os
from datetime import timedelta

from ..runtime.comm import SingleProcess
from .env import rank_env, started_by_mpi

_world = {"comm": None, "backend": None}


def world_comm():
    """The communicator `init_process_group` made, or None."""
    return _world["comm"]


def _cuda_visible() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:      # no CuPy, or no driver
        return False


def init_process_group(backend: str = "auto", init_method: str | None = None, timeout=None,
                       world_size: int = -1, rank: int = -1, **_ignored) -> None:
    """Join the ranks of this job. `timeout` (seconds or a timedelta; default 300 s, or
    TRACEGRAD_COMM_TIMEOUT) bounds every collective: a rank that never arrives makes the others
    raise instead of hanging."""
    if _world["comm"] is not None:
        raise RuntimeError("init_process_group was already called; call destroy_process_group first")
    if backend not in ("auto", "mpi", "nccl", "gloo"):
        raise ValueError(f"init_process_group: backend must be 'nccl', 'mpi', 'gloo' or 'auto', got {backend!r}")
    if isinstance(timeout, timedelta):
        timeout = timeout.total_seconds()
    timeout = float(timeout or os.environ.get("TRACEGRAD_COMM_TIMEOUT", 300))
    env = rank_env()
    n = world_size if world_size > 0 else env.world_size
    r = rank if rank >= 0 else env.rank
    if backend == "auto":       # `tracegrad launch --gpus` says so (TRACEGRAD_GPUS=1); without it, CPU ranks
        gpus = os.environ.get("TRACEGRAD_GPUS")
        backend = "nccl" if gpus == "1" or (gpus is None and _cuda_visible()) else "mpi"
    asked, backend = backend, "mpi" if backend == "gloo" else backend   # gloo: PyTorch's CPU backend
    if n == 1 and not started_by_mpi():
        comm = SingleProcess()
    elif backend == "mpi":
        if not started_by_mpi():
            raise RuntimeError(f"init_process_group(backend='mpi'): this is rank {r} of {n} ({env.source}), but "
                               "it was not started by MPI; start the ranks with `tracegrad launch -n N script.py` "
                               "or mpiexec")
        from ..runtime.comm_mpi import MPIComm     # NOTE: mpi4py is the `dist` extra's, loaded on use
        comm = MPIComm(timeout)
    else:
        from ..runtime.comm_nccl import NCCLComm   # NOTE: CuPy is the `gpu` extra's, loaded on use
        comm = NCCLComm.create(r, n, env.local_rank, timeout)
    if comm.world_size != n:
        raise RuntimeError(f"init_process_group: the launcher says {n} ranks ({env.source}) but {backend} sees "
                           f"{comm.world_size}")
    _world.update(comm=comm, backend=asked)


def is_initialized() -> bool:
    return _world["comm"] is not None


def is_available() -> bool:
    return True


def get_backend(group=None) -> str:
    return _world["backend"] or "single"


def destroy_process_group(group=None) -> None:
    comm = _world["comm"]
    if comm is not None and hasattr(comm, "close"):
        comm.close()
    _world.update(comm=None, backend=None)
