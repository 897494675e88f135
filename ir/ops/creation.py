"""Ops that make values from attributes alone (`full`, `iota`), counter-based random numbers,
and `stop_gradient`.

Random ops are pure functions of an RNG state `i64[2]` = (seed, offset): each returns its sample
and the advanced state, so the frontend threads the state through a step like any other value.
The bits come from a counter-based hash (see codegen's `rng`), so eager runs and compiled runs
draw exactly the same numbers.
"""
from __future__ import annotations

from ..types import TensorType, int64
from .registry import defop, fail


def _full_infer(ts, shape, value, dtype, device):
    return TensorType(tuple(shape), dtype, device)


defop("full", "creation", _full_infer, 0, dict(shape=(), value=0.0, dtype=None, device="cpu"), nondiff=True)


def _iota_infer(ts, shape, axis, dtype, device):
    if not 0 <= axis < max(1, len(shape)):
        fail("iota", ts, f"axis {axis} out of range for shape {list(shape)}")
    return TensorType(tuple(shape), dtype, device)


defop("iota", "creation", _iota_infer, 0, dict(shape=(), axis=0, dtype=int64, device="cpu"), nondiff=True,
      doc="the index along `axis`, broadcast to `shape`")


def _random_infer(op):
    def infer(ts, shape, dtype):
        (state,) = ts
        if state.shape != (2,) or state.dtype != int64:
            fail(op, ts, "the RNG state must be i64[2] (seed, offset)")
        if not dtype.is_floating:
            fail(op, ts, f"samples must be floating point, got {dtype.name}")
        return [TensorType(tuple(shape), dtype, state.device), state]
    return infer


defop("rand_uniform", "random", _random_infer("rand_uniform"), 1, dict(shape=(), dtype=None), nondiff=True,
      doc="U[0, 1) samples and the advanced RNG state")
defop("rand_normal", "random", _random_infer("rand_normal"), 1, dict(shape=(), dtype=None), nondiff=True,
      doc="N(0, 1) samples (Box-Muller) and the advanced RNG state")

defop("stop_gradient", "marker", lambda ts: ts[0], 1, nondiff=True,
      doc="identity that autodiff does not look through (Tensor.detach inside a trace)")
