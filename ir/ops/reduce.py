"""Reductions over axes: `sum`, `max`, `argmax`.

`axes` is a sorted tuple of non-negative axes (the frontend normalizes `dim=-1` and `dim=None`).
"""
from __future__ import annotations

from ..types import int64
from .registry import defop, fail, vjp


def reduced_shape(shape, axes, keepdim):
    if keepdim:
        return tuple(1 if i in axes else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def _check_axes(op, ts, axes):
    nd = ts[0].ndim
    if any(not 0 <= a < nd for a in axes) or len(set(axes)) != len(axes) or tuple(sorted(axes)) != tuple(axes):
        fail(op, ts, f"axes {axes} are not sorted distinct axes of a {nd}-d tensor")


def _reduce_infer(op):
    def infer(ts, axes, keepdim):
        _check_axes(op, ts, axes)
        if op == "max" and any(ts[0].shape[a] == 0 for a in axes):
            fail(op, ts, "max of an empty dimension")
        return ts[0].with_(shape=reduced_shape(ts[0].shape, axes, keepdim))
    return infer


defop("sum", "reduce", _reduce_infer("sum"), 1, dict(axes=(), keepdim=False))
defop("max", "reduce", _reduce_infer("max"), 1, dict(axes=(), keepdim=False))


def _argmax_infer(ts, axis, keepdim):
    _check_axes("argmax", ts, (axis,))
    return ts[0].with_(shape=reduced_shape(ts[0].shape, (axis,), keepdim), dtype=int64)


defop("argmax", "reduce", _argmax_infer, 1, dict(axis=0, keepdim=False), nondiff=True)


def _unreduce(b, g, n):
    """Bring a reduction's cotangent back to the input's shape."""
    x = n.inputs[0]
    keep = tuple(1 if i in n.attrs["axes"] else s for i, s in enumerate(b.shape(x)))
    return b.expand_to(b.reshape_to(g, keep), b.shape(x))


@vjp("sum")
def _sum_vjp(b, n, gs):
    return _unreduce(b, gs[0], n),


@vjp("max")
def _max_vjp(b, n, gs):
    # the gradient is shared among ties, like torch.amax
    x = n.inputs[0]
    hit = b.cast_to(b.eq(x, _unreduce(b, n.outputs[0], n)), b.dtype(x))
    count = b.sum(hit, axes=n.attrs["axes"], keepdim=True)
    return b.mul(hit, _unreduce(b, b.div(b.reshape_to(gs[0], b.shape(count)), count), n)),
