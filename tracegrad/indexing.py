"""`t[key]` and `t[key] = v` in NumPy/PyTorch semantics, lowered to slice, reshape, take and where.

Basic indices (ints, slices with positive steps, None, ...) become one `slice` and a `reshape`;
an integer tensor or list becomes `take`; several of them are linearized into one `take`.
Boolean masks give data-dependent shapes, so reading `t[mask]` works eagerly only; writing
`t[mask] = v` is a `where` and works everywhere.
"""
from __future__ import annotations

import numpy as np

from .dispatch import BUILDER, apply
from .errors import DataDependentError, ShapeError, UnsupportedError
from .ir.ops import get
from .ir.types import bool_, int64
from . import tensor as tensor_mod, trace as _trace
from .creation import ones, tensor, zeros_like
from .functions import constant, scalar_dtype, where
from .provenance import where as user_line


def _tensor_type():
    return tensor_mod.Tensor


def _as_index_tensor(k, device):
    T = _tensor_type()
    if isinstance(k, T):
        return k
    return tensor(np.asarray(k), device=device)


def _expand_key(x, key):
    key = key if isinstance(key, tuple) else (key,)
    n_real = sum(1 for k in key if k is not None and k is not Ellipsis)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (x.ndim - n_real) + key[i + 1:]
    return key + (slice(None),) * (x.ndim - sum(1 for k in key if k is not None))


def _basic(x, key):
    """Apply ints/slices/None; return (tensor, positions of advanced indices, the indices)."""
    starts, stops, steps, out_shape, adv = [], [], [], [], []
    axis = 0
    for k in key:
        if k is None:
            out_shape.append(1)
            continue
        n = x.shape[axis]
        if isinstance(k, slice):
            lo, hi, st = k.indices(n)
            if st < 1:
                raise UnsupportedError(f"negative slice steps are not supported (got {k}); use .flip()")
            hi = max(hi, lo)
            starts.append(lo), stops.append(hi), steps.append(st)
            out_shape.append(len(range(lo, hi, st)))
        elif isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            i = int(k) + n if k < 0 else int(k)
            if not 0 <= i < n:
                raise IndexError(f"index {k} is out of bounds for dimension {axis} with size {n}")
            starts.append(i), stops.append(i + 1), steps.append(1)
        else:   # advanced: keep the whole axis now, index it afterwards
            starts.append(0), stops.append(n), steps.append(1)
            adv.append((len(out_shape), k))
            out_shape.append(n)
        axis += 1
    if (tuple(starts), tuple(stops), tuple(steps)) != ((0,) * x.ndim, tuple(x.shape), (1,) * x.ndim):
        x = apply("slice", x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
    if tuple(out_shape) != x.shape:
        x = x.reshape(*out_shape)
    return x, adv


def getitem(x, key):
    T = _tensor_type()
    if isinstance(key, T) and key.dtype == bool_ or isinstance(key, np.ndarray) and key.dtype == bool:
        if _trace.current() is not None:
            raise DataDependentError("t[mask] has a data-dependent shape and cannot be compiled; use "
                                     "tg.where(mask, t, 0) or t.masked_fill(~mask, 0) instead")
        idx = np.nonzero(np.asarray(key.numpy() if isinstance(key, T) else key))
        key = tuple(_as_index_tensor(i, x.device) for i in idx)
    y, adv = _basic(x, _expand_key(x, key))
    if not adv:
        mark_view(y, x, key)
        return y
    idx = [_as_index_tensor(k, x.device) for _, k in adv]
    axes = [a for a, _ in adv]
    if len(idx) == 1:
        i = idx[0].to(int64)
        return apply("take", y, _wrap_negative(i, y.shape[axes[0]]), axis=axes[0])
    if axes != list(range(axes[0], axes[0] + len(axes))):
        raise UnsupportedError("advanced indices must be on neighbouring axes")
    # linearize several index tensors into one take over the merged axes
    sizes = [y.shape[a] for a in axes]
    flat = None
    for i, n in zip(idx, sizes):
        i = _wrap_negative(i.to(int64), n)
        flat = i if flat is None else flat * n + i
    merged = y.reshape(*y.shape[:axes[0]], -1, *y.shape[axes[-1] + 1:])
    return apply("take", merged, flat, axis=axes[0])


def _wrap_negative(i, n):
    if _trace.current() is None and i.numel() and int(np.asarray(i.numpy()).min()) >= 0:
        return i
    return where(i < 0, i + n, i)


def setitem(x, key, value):
    """x[key] = value, as a functional update assigned back into x."""
    T = _tensor_type()
    if not isinstance(value, T):
        value = constant(value, scalar_dtype(value, x.dtype), x.device)
    value = value.to(x.dtype)
    if isinstance(key, T) and key.dtype == bool_:
        mask = key.reshape(*key.shape, *([1] * (x.ndim - key.ndim)))
        if value.ndim and value.numel() != 1:
            if _trace.current() is not None:
                raise DataDependentError("t[mask] = values needs one value per True; use tg.where(mask, v, t)")
            idx = np.nonzero(np.asarray(key.numpy()))
            return setitem(x, tuple(_as_index_tensor(i, x.device) for i in idx), value)
        x._assign(apply("where", mask.expand(*x.shape), value.reshape(()).expand(*x.shape), x))
        return
    key = _expand_key(x, key)
    if any(k is not None and not isinstance(k, (slice, int, np.integer)) for k in key):
        _setitem_advanced(x, key, value)
        return
    x._assign(_set_basic(x, key, value))


def _set_basic(x, key, value):
    """The whole of x after x[key] = value, for a key of ints, slices and None."""
    key = tuple(k for k in key if k is not None)
    starts, stops, steps, shape, dropped = [], [], [], [], []
    for k, n in zip(key, x.shape):
        if isinstance(k, slice):
            lo, hi, st = k.indices(n)
            hi = max(hi, lo)
            dropped.append(len(range(lo, hi, st)))
        else:
            i = int(k) + n if k < 0 else int(k)
            if not 0 <= i < n:
                raise IndexError(f"index {k} is out of bounds for dimension {len(starts)} with size {n}")
            lo, hi, st = i, i + 1, 1
        starts.append(lo), stops.append(hi), steps.append(st), shape.append(len(range(lo, hi, st)))
    node = _FakeSlice(x, dict(starts=tuple(starts), stops=tuple(stops), steps=tuple(steps)))
    rule = get("slice").vjp   # the transpose of slicing places a block back into the full shape
    # NOTE: the value broadcasts against the indexed shape, integer-indexed axes dropped (PyTorch's rule)
    while value.ndim > len(dropped) and value.shape[0] == 1:
        value = value.reshape(*value.shape[1:])
    block = value.broadcast_to(*dropped).contiguous().reshape(*shape)
    placed = rule(BUILDER, node, [block])[0]
    inside = rule(BUILDER, node, [ones(*shape, dtype=x.dtype, device=x.device)])[0] != 0
    return apply("where", inside, placed, x)


def mark_view(view, base, key) -> None:
    """`view` = base[key] (basic indexing) shares base's memory: in-place updates of it reach base."""
    if view is not base:
        view._view = (base, lambda new: _set_basic(base, _expand_key(base, key), new),
                      lambda: _basic(base, _expand_key(base, key))[0])


class _FakeSlice:
    def __init__(self, x, attrs):
        self.inputs, self.attrs, self.op = (x,), attrs, "slice"


def _setitem_advanced(x, key, value):
    key = [k for k in key if k is not None]
    adv = [(a, k) for a, k in enumerate(key) if not isinstance(k, (slice, int, np.integer))]
    if len(adv) != 1 or any(k != slice(None) for k in key if isinstance(k, slice) or isinstance(k, int)):
        raise UnsupportedError("index assignment supports one index tensor with ':' on the other axes")
    axis, k = adv[0]
    i = _wrap_negative(_as_index_tensor(k, x.device).to(int64), x.shape[axis])
    want = x.shape[:axis] + i.shape + x.shape[axis + 1:]
    vals = apply("index_add", zeros_like(x), i, value.broadcast_to(*want).contiguous())
    hit = apply("index_add", zeros_like(x), i, ones(*want, dtype=x.dtype, device=x.device)) != 0
    x._assign(apply("where", hit, vals, x))


# -- gather / scatter_add with PyTorch's shape rules -------------------------------------------
def _check_along(op, x, axis, index, src=None):
    """PyTorch lets the index be smaller than the input (and src) on the other axes; the IR's ops
    take equal shapes, so the frontend indexes the leading block. Returns that block's key."""
    shapes = f"input {list(x.shape)}, index {list(index.shape)}" + (f", src {list(src.shape)}" if src is not None else "")
    if index.ndim != x.ndim or src is not None and src.ndim != x.ndim:
        raise ShapeError(f"{op}: index (and src) must have as many dimensions as the input; got {shapes}\n"
                         f"  at {user_line()}")
    for d, (i, n) in enumerate(zip(index.shape, x.shape)):
        if d != axis and i > n or src is not None and i > src.shape[d]:
            raise ShapeError(f"{op}: index size {i} on dimension {d} is larger than the input's or src's; "
                             f"got {shapes}\n  at {user_line()}")
    return tuple(slice(0, i) if d != axis else slice(None) for d, i in enumerate(index.shape))


def gather(x, axis: int, index):
    key = _check_along("gather", x, axis, index)
    block = x[key] if any(i != n for d, (i, n) in enumerate(zip(index.shape, x.shape)) if d != axis) else x
    return apply("gather", block, index, axis=axis)


def scatter_add(x, axis: int, index, src):
    key = _check_along("scatter_add", x, axis, index, src)
    src = src[tuple(slice(0, i) for i in index.shape)] if tuple(src.shape) != tuple(index.shape) else src
    src = src.to(x.dtype)
    if all(i == n for d, (i, n) in enumerate(zip(index.shape, x.shape)) if d != axis):
        return apply("scatter_add", x, index, src, axis=axis)
    return _set_basic(x, key, apply("scatter_add", x[key], index, src, axis=axis))
