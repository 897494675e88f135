"""`tg.set_num_threads` / `tg.get_num_threads`: the CPU threads numpy's BLAS uses.

Eager ops and the numpy backend run their matmuls in the BLAS numpy links (OpenBLAS, MKL); these
set its thread pool through threadpoolctl when it is installed, as `torch.set_num_threads` sets
PyTorch's intra-op pool. Without threadpoolctl the number is recorded and reported only.
"""
from __future__ import annotations

import os

_threads = {"n": None}


def set_num_threads(n: int) -> None:
    if int(n) < 1:
        raise ValueError(f"set_num_threads: expected a positive number of threads, got {n}")
    _threads["n"] = int(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=int(n), user_api="blas")


def get_num_threads() -> int:
    if _threads["n"] is not None:
        return _threads["n"]
    try:
        from threadpoolctl import threadpool_info
        info = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
        if info:
            return max(info)
    except ImportError:
        pass
    return os.cpu_count() or 1


def set_num_interop_threads(n: int) -> None:
    """Accepted for compatibility: tracegrad runs one op at a time."""


def get_num_interop_threads() -> int:
    return 1
