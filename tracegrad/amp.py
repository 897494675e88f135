"""Mixed precision: `tg.autocast(dtype)` runs matmuls in `dtype` (bf16/fp16) while parameters,
norms, softmax and losses stay in fp32 (their composites upcast half inputs themselves).
"""
from __future__ import annotations

import contextlib
import threading

from .ir.types import dtype as to_dtype, float32

_state = threading.local()


def autocast_dtype():
    return getattr(_state, "dtype", None)


@contextlib.contextmanager
def autocast(dtype=None, enabled: bool = True, device_type: str | None = None):
    """`with tg.autocast(tg.bfloat16):` (also accepts PyTorch's `autocast(device_type, dtype=)`)."""
    if isinstance(dtype, str) and dtype in ("cpu", "cuda"):
        dtype, device_type = None, dtype
    old = autocast_dtype()
    _state.dtype = to_dtype(dtype) if (enabled and dtype is not None) else None
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
