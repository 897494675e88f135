"""The few numpy routines the generated programs call that are not one numpy expression:
scatter-adds, iota, random draws, erf.

Generated code refers to these by name (`index_add(...)`), so they are the whole runtime
library a numpy program needs besides numpy itself.
"""
from __future__ import annotations

import numpy as np
from scipy import special

from . import rng
from .index_range import check_host


def erf(x):
    return special.erf(x)


def sigmoid(x):
    return special.expit(x)


def index_add(x, idx, src, axis):
    """x + src scattered to the places np.take(x, idx, axis) reads (repeats accumulate)."""
    out = np.array(x, copy=True)
    if axis == 0 and idx.size and x.ndim == 2:
        # np.add.at is slow; for an embedding's gradient a sorted segment-sum does the same
        flat = idx.reshape(-1)
        order = np.argsort(flat, kind="stable")
        uniq, start = np.unique(flat[order], return_index=True)
        rows = src.reshape(-1, x.shape[1])[order]
        out[uniq] += np.add.reduceat(rows, start, axis=0).astype(out.dtype)
        return out
    np.add.at(out, (slice(None),) * axis + (idx,), src)
    return out


def scatter_add(x, idx, src, axis):
    """x + src scattered to the places np.take_along_axis(x, idx, axis) reads."""
    out = np.array(x, copy=True)
    where = list(np.indices(idx.shape, sparse=True))
    where[axis] = idx
    np.add.at(out, tuple(where), src)
    return out


def iota(shape, axis, dtype):
    ar = np.arange(shape[axis] if shape else 1, dtype=dtype)
    ar = ar.reshape(tuple(-1 if i == axis else 1 for i in range(len(shape)))) if shape else ar.reshape(())
    # NOTE: a copy, not np.ascontiguousarray: that returns the read-only broadcast view itself when
    # it is already contiguous (one row), and memory planning may write into this buffer
    return np.array(np.broadcast_to(ar, shape), copy=True)


def rand_uniform(state, shape, dtype):
    return rng.draw("uniform", state, shape, dtype)


def rand_normal(state, shape, dtype):
    return rng.draw("normal", state, shape, dtype)


def check_index(idx, bound: int, op: str, where: str) -> None:
    """Raise IndexError (`index_range.out_of_range`) unless every entry of `idx` is in [0, bound)."""
    check_host(op, idx, bound, where)
