"""Small kernels that check values on the device and leave the answer in a flag buffer, so a
compiled step learns of a bad index or a NaN without a host sync (see `index_flags.py`,
`nan_flags.py`). Run under Triton's interpreter on numpy buffers, compiled on CuPy ones.

    safe = flag_range(idx, flags.row(k), 0, 50304)   # row k := (1, some bad value) if one is out of range
    flag_nan(x, nan.buf, 7)                     # nan.buf[0] := min(nan.buf[0], 7) if x holds a NaN
"""
from __future__ import annotations

import numpy as np
import triton
import triton.language as tl

from ..devices import dtype_of, empty
from ..triton_host import launch


@triton.jit
def _check_range(idx_ptr, safe_ptr, chk_ptr, n, lo, size, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    i = tl.load(idx_ptr + offs, m, other=0)
    bad = ((i < lo) | (i >= size)) & m
    if tl.max(bad.to(tl.int32), 0) > 0:      # NOTE: one branch per block, not a store per lane
        tl.store(chk_ptr, 1)
        tl.store(chk_ptr + 1, tl.max(tl.where(bad, i.to(tl.int64), -2**62), 0))
    tl.store(safe_ptr + offs, tl.where(bad, 0, i), m)


@triton.jit
def _check_nan(x_ptr, flag_ptr, n, k, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, offs < n, other=0.0).to(tl.float32)
    nans = tl.sum((x != x).to(tl.int32), 0)
    # NOTE: the smallest node number wins: the first node in program order that made a NaN
    tl.atomic_min(flag_ptr, tl.where(nans > 0, k, 2147483647))


def _blocks(n: int, cap: int) -> tuple[tuple, int]:
    block = min(cap, triton.next_power_of_2(n))
    return (triton.cdiv(n, block),), block


def flag_range(idx, chk, lo: int, size: int):
    """Check a contiguous index buffer against [lo, size) into the flag row `chk` (no sync); returns
    a copy with each bad index replaced by 0, safe to scatter with."""
    n = int(np.prod(idx.shape))
    safe = empty(idx.shape, dtype_of(idx), like=idx)
    if n:
        grid, block = _blocks(n, 1024)
        launch(_check_range, grid, idx, safe, chk, n, lo, size, BLOCK=block)
    return safe


def flag_nan(x, flag, k: int) -> None:
    """flag[0] = min(flag[0], k) if the contiguous float buffer `x` holds a NaN (no sync)."""
    n = int(np.prod(x.shape))
    if n:
        grid, block = _blocks(n, 4096)
        launch(_check_nan, grid, x, flag, n, k, BLOCK=block)
