"""Mixed precision: `tg.autocast(dtype)` runs matmuls in `dtype` (bf16/fp16) while parameters,
norms, softmax and losses stay in fp32 (their composites upcast half inputs themselves).
`tg.amp.GradScaler` (grad_scaler.py) scales the loss for fp16.
"""
from __future__ import annotations

import contextlib
import threading

from .ir.types import dtype as to_dtype, float32

_state = threading.local()


def autocast_dtype():
    return getattr(_state, "dtype", None)


@contextlib.contextmanager
def autocast(device_or_dtype=None, dtype=None, enabled: bool = True, device_type: str | None = None):
    """`with tg.autocast(tg.bfloat16):`, or PyTorch's `autocast("cuda", dtype=...)`; without a dtype,
    PyTorch's defaults: fp16 on CUDA, bf16 on the CPU."""
    if isinstance(device_or_dtype, str) and device_or_dtype.split(":")[0] in ("cpu", "cuda"):
        device_type = device_or_dtype
    elif device_or_dtype is not None:
        if dtype is not None:
            raise TypeError(f"autocast: dtype given twice ({device_or_dtype!r} and {dtype!r})")
        dtype = device_or_dtype
    if dtype is None:
        dtype = "float16" if (device_type or "cpu").startswith("cuda") else "bfloat16"
    old = autocast_dtype()
    _state.dtype = to_dtype(dtype) if enabled else None
    try:
        yield
    finally:
        _state.dtype = old


def cast_for_matmul(a, b):
    d = autocast_dtype()
    if d is None:
        return a, b
    cast = lambda t: t.to(d) if getattr(t, "dtype", float32).is_floating else t
    return cast(a), cast(b)


def __getattr__(name):
    if name == "GradScaler":
        # NOTE: GradScaler is built of tensor ops, which read the autocast state here: it is found
        # on first use so that this module stays below the tensor API.
        from .grad_scaler import GradScaler
        return GradScaler
    raise AttributeError(f"module 'tracegrad.amp' has no attribute {name!r}")
