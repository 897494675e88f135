"""TRACEGRAD_CHECK_NANS for compiled Triton steps, with one host read per step instead of one per
node: after each float result k the host launches a small scan (`templates/checks.flag_nan`) that
lowers a device flag to k when the result holds a NaN; at the end of the step the flag is read
once, and the smallest k, the first node in program order that made a NaN, is named:

    NaNError: first NaN produced by t7 = k3_poi_fused_log_mul at train.py:12  y = x.log() * 2

On the CPU (the interpreter, numpy buffers) the same scans run, so CI checks this path.
"""
from __future__ import annotations

import numpy as np

from . import devices

NONE = 2 ** 31 - 1      # the flag when no scanned result held a NaN


class NaNError(FloatingPointError):
    """TRACEGRAD_CHECK_NANS found a NaN; the message names the node that made it."""


def has_nan(x) -> bool:
    """Whether a buffer (numpy, CuPy or bf16 TypedArray) holds a NaN. On a GPU the test runs there
    and only its answer comes back (a host sync, not a copy of the buffer)."""
    if isinstance(x, np.ndarray):
        return bool(np.isnan(np.asarray(x, dtype=np.float32)).any())
    if devices.is_cuda(x):
        return bool(devices.cupy().isnan(devices.widen(x)).any())
    return bool(np.isnan(np.asarray(devices.to_numpy(x), dtype=np.float32)).any())


class NanFlags:
    """One int32 flag on the step's device; `wheres[k]` describes scanned result k."""

    def __init__(self, wheres: list[str], device: str = "cpu"):
        self.wheres = list(wheres)
        first = np.full(1, NONE, np.int32)
        self.buf = first if device == "cpu" else devices.transfer(first, device)

    def scan(self, x, k: int) -> None:
        """Queue the NaN scan of result k (no sync)."""
        from .templates.checks import flag_nan
        if type(x) is devices.TypedArray:
            flat = x if x.array.flags.c_contiguous else devices.TypedArray(x.array.copy(), x.dtype)
        else:
            flat = x if x.flags.c_contiguous else x.copy()
        flag_nan(flat, self.buf, k)

    def check(self) -> None:
        """Read the flag (the step's one host sync); raise NaNError naming the first bad result."""
        k = int(devices.to_numpy(self.buf)[0])
        if k != NONE:
            self.buf[...] = NONE
            raise NaNError(f"first NaN produced by {self.wheres[k]}")
