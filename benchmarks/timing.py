"""What both GPU benchmarks share: CuPy allocating through torch's caching allocator (so torch's
peak-memory counters see every buffer) and `measure` (median time and peak memory of a call)."""
from __future__ import annotations

import cupy
import torch
import triton.testing


def torch_alloc(nbytes):
    t = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    return cupy.cuda.MemoryPointer(cupy.cuda.UnownedMemory(t.data_ptr(), nbytes, t), 0)


def measure(fn, grad_to_none=None):
    """(median ms, peak MB allocated beyond what was live before)."""
    fn()
    for t in grad_to_none or []:  # else backward accumulates into a .grad that is already there
        t.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    ms = triton.testing.do_bench(fn, grad_to_none=grad_to_none, return_mode="median")
    return ms, peak
