"""One thread setting for the CPU: `tg.set_num_threads(n)` / `TRACEGRAD_NUM_THREADS` set the BLAS
library's threads (matmuls, through threadpoolctl) and the fused CPU kernels' row split together.

    tg.set_num_threads(2)       # as torch.set_num_threads
    tg.get_num_threads()        # -> 2

Default: `TRACEGRAD_NUM_THREADS` when set, else the CPUs this process may run on, at most 8 (BLAS's
own default, and PyTorch's). On a shared machine, fewer threads than cores is often faster: a
BLAS thread that waits for a busy core spins (measured on a loaded 2-core machine: a GPT step at
1 BLAS thread 500 ms, at 2 threads 3.8 s), so set 1 there.
"""
from __future__ import annotations

import os

from threadpoolctl import threadpool_limits

from .runtime import cpu_kernels

_STATE: dict = {"n": None, "limiter": None}


def _default() -> int:
    env = os.environ.get("TRACEGRAD_NUM_THREADS", "")
    if env.strip():
        return max(1, int(env))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:     # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def set_num_threads(n: int) -> None:
    """Threads for CPU math: BLAS calls and the fused CPU kernels (see the module docstring)."""
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads needs a positive count, got {n}")
    cpu_kernels.set_threads(n)
    _STATE["limiter"] = threadpool_limits(limits=n, user_api="blas")
    _STATE["n"] = n


def get_num_threads() -> int:
    """The thread count `set_num_threads` set (or the default it would apply)."""
    return _STATE["n"] if _STATE["n"] is not None else _default()


def apply_default() -> None:
    """Apply the default once, before the first CPU program runs (only when asked for by the
    environment: otherwise BLAS keeps its own default and the kernels use as many threads)."""
    if _STATE["n"] is None:
        if os.environ.get("TRACEGRAD_NUM_THREADS", "").strip():
            set_num_threads(_default())
        else:
            cpu_kernels.set_threads(_default())
            _STATE["n"] = _default()


def set_num_interop_threads(n: int) -> None:
    """Accepted for compatibility: tracegrad runs one op at a time."""


def get_num_interop_threads() -> int:
    return 1
