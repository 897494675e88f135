"""The few numpy routines the generated programs call that are not one numpy expression:
scatter-adds, iota, random draws, erf, and faster forms of `where` and `pad`.

Generated code refers to these by name (`index_add(...)`), so they are the whole runtime
library a numpy program needs besides numpy itself.
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy import special

from . import rng
from .index_range import check_host


def erf(x):
    return special.erf(x)


def sigmoid(x):
    return special.expit(x)


SELECT_MIN = 1 << 16     # elements from which `select` beats np.where (measured on a 2-core x86 VM)


def select(cond, a, b):
    """np.where(cond, a, b); for large float arrays of one dtype, branch-free bit arithmetic.

    NOTE: np.where branches per element: on an unpredictable mask (a ReLU's) it ran 3.7 ms for
    400k fp32 elements, against 0.5 ms for these six integer passes (on a causal mask 0.69 -> 0.31 ms).
    The result is bit-identical: each element is a's bits or b's bits."""
    a, b = np.asarray(a), np.asarray(b)
    d = a.dtype
    if (d != b.dtype or d.kind != "f" or d.itemsize not in (4, 8) or cond.dtype != np.bool_
            or max(cond.size, a.size, b.size) < SELECT_MIN):
        return np.where(cond, a, b)
    shape = np.broadcast_shapes(cond.shape, a.shape, b.shape)
    it = np.int32 if d.itemsize == 4 else np.int64
    m = np.empty(shape, it)
    m[...] = cond
    np.negative(m, out=m)                   # all ones where cond, else zeros
    r = np.bitwise_and(a.view(it), m)
    np.invert(m, out=m)
    np.bitwise_and(b.view(it), m, out=m)
    np.bitwise_or(r, m, out=r)
    return r.view(d)


def pad(x, pads, value):
    """np.pad(x, pads, constant_values=value): a filled buffer and one copy (np.pad costs ~0.5 ms
    of Python per call, more than the copy on a small CNN's activations)."""
    x = np.asarray(x)
    out = np.full(tuple(s + lo + hi for s, (lo, hi) in zip(x.shape, pads)), value, dtype=x.dtype)
    out[tuple(slice(lo, lo + s) for s, (lo, _) in zip(x.shape, pads))] = x
    return out


def fold_axes(ufunc, x, axes, keepdims):
    """ufunc.reduce over a few short axes as elementwise ufunc calls, one per position on them, on
    strided views of x (what a reduction over a short innermost axis should cost)."""
    x = np.asarray(x)
    out = None
    for at in itertools.product(*(range(x.shape[a]) for a in axes)):
        pick = dict(zip(axes, at))
        view = x[tuple((slice(pick[a], pick[a] + 1) if keepdims else pick[a]) if a in pick else slice(None)
                       for a in range(x.ndim))]
        out = view.copy() if out is None else ufunc(out, view, out=out)
    return out


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
