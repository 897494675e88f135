"""Tensor math in PyTorch's terms, written on the IR's primitives through `apply`:
dtype promotion and Python scalars, elementwise math, reductions, matmul, `where`, `cat`/`stack`.

The IR takes one dtype per binary op, so promotion happens here, visibly, as `cast` nodes.
"""
from __future__ import annotations

import builtins
import math
from collections import namedtuple

from . import amp, tensor as tensor_mod
from .dispatch import apply
from .ir.types import DType, bool_, float32, int64, promote

Number = (int, float, bool)
# NOTE: named as PyTorch's torch.return_types (max, min, topk, sort), which reprs and pickles show
MaxResult = namedtuple("max", ["values", "indices"])
MinResult = namedtuple("min", ["values", "indices"])
TopkResult = namedtuple("topk", ["values", "indices"])
SortResult = namedtuple("sort", ["values", "indices"])


def _tensor_type():
    return tensor_mod.Tensor


def scalar_dtype(x, other: DType) -> DType:
    """The dtype a Python number takes next to a tensor of dtype `other` (PyTorch's rule)."""
    if isinstance(x, bool):
        return other
    if isinstance(x, int):
        return other if other != bool_ else int64
    return other if other.is_floating else float32


def constant(value, dtype: DType, device: str):
    return apply("full", shape=(), value=value, dtype=dtype, device=device)


def coerce(a, b):
    """Two operands -> two tensors of one dtype, Python numbers becoming 0-d constants."""
    T = _tensor_type()
    if not isinstance(a, T):
        d = scalar_dtype(a, b.dtype)
        return constant(_as(a, d), d, b.device), (b if d is b.dtype else b.to(d))
    if not isinstance(b, T):
        d = scalar_dtype(b, a.dtype)
        return (a if d is a.dtype else a.to(d)), constant(_as(b, d), d, a.device)
    if a.dtype == b.dtype:
        return a, b
    # 0-d tensors of the same category defer to the other operand, as in PyTorch
    da, db = a.dtype, b.dtype
    if a.ndim == 0 and b.ndim > 0 and da.kind == db.kind:
        d = db
    elif b.ndim == 0 and a.ndim > 0 and da.kind == db.kind:
        d = da
    else:
        d = promote(da, db)
    return a.to(d), b.to(d)


def _as(x, d: DType):
    return bool(x) if d == bool_ else int(x) if d.is_integer else float(x)


def binary(op: str, a, b):
    a, b = coerce(a, b)
    return apply(op, a, b)


def true_divide(a, b):
    a, b = coerce(a, b)
    if not a.dtype.is_floating:
        a, b = a.to(float32), b.to(float32)
    return apply("div", a, b)


def floor_divide(a, b):
    a, b = coerce(a, b)
    q = apply("div", a, b)
    return q.floor() if q.dtype.is_floating else q


def unary(op: str, x):
    if op not in ("neg", "abs", "sign", "logical_not", "isnan") and not x.dtype.is_floating:
        x = x.to(float32)
    return apply(op, x)


def where(cond, x, y):
    T = _tensor_type()
    if not isinstance(cond, T):
        raise TypeError("where(cond, x, y): cond must be a bool tensor")
    if not isinstance(x, T) and not isinstance(y, T):
        x = constant(x, scalar_dtype(x, float32), cond.device)
    x, y = coerce(x, y)
    return apply("where", cond.to(bool_), x, y)


def clamp(x, min=None, max=None):
    if min is not None:
        x = binary("maximum", x, min)
    if max is not None:
        x = binary("minimum", x, max)
    return x


def wrap_dim(d: int, ndim: int) -> int:
    """A dimension argument in [-ndim, ndim) as an axis in [0, ndim); IndexError otherwise, as in PyTorch
    (a 0-d tensor takes dims -1 and 0)."""
    n = builtins.max(ndim, 1)
    if not -n <= d < n:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {d})")
    return d % n


# -- reductions -------------------------------------------------------------------------------
def axes_of(x, dim) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(x.ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    nd = builtins.max(x.ndim, 1)
    for d in dims:
        if not -nd <= d < nd:
            raise IndexError(f"dimension {d} is out of range for a {x.ndim}-d tensor of shape {list(x.shape)}")
    return tuple(sorted({d % nd for d in dims})) if x.ndim else ()


def sum(x, dim=None, keepdim: bool = False, *, dtype=None):
    if dtype is not None:
        x = x.to(dtype)
    elif x.dtype == bool_ or x.dtype.is_integer and x.dtype != int64:
        x = x.to(int64)
    return apply("sum", x, axes=axes_of(x, dim), keepdim=keepdim)


def mean(x, dim=None, keepdim: bool = False, *, dtype=None):
    x = x.to(dtype) if dtype is not None else (x if x.dtype.is_floating else x.to(float32))
    axes = axes_of(x, dim)
    n = math.prod(x.shape[a] for a in axes)
    return apply("sum", x, axes=axes, keepdim=keepdim) * (1.0 / n if n else math.nan)


def var(x, dim=None, unbiased=None, keepdim: bool = False, *, correction=None):
    correction = correction if correction is not None else (0 if unbiased is False else 1)
    axes = axes_of(x, dim)
    n = math.prod(x.shape[a] for a in axes)
    xc = x - mean(x, axes, keepdim=True)
    return sum(xc * xc, axes, keepdim=keepdim) * (1.0 / (n - correction) if n - correction > 0 else math.nan)


def std(x, dim=None, unbiased=None, keepdim: bool = False, *, correction=None):
    return safe_sqrt(var(x, dim, unbiased, keepdim, correction=correction))


def safe_sqrt(v):
    """sqrt(v) whose gradient at v = 0 is 0 (as PyTorch's std and norm give), not inf * 0 = NaN."""
    # NOTE: the double `where` keeps the unused branch's infinite derivative out of the sum
    pos = v > 0
    return where(pos, where(pos, v, 1.0).sqrt(), 0.0)


def safe_root(v, p):
    """v ** (1/p) for v >= 0 with a zero gradient at v = 0."""
    pos = v > 0
    return where(pos, where(pos, v, 1.0) ** (1.0 / p), 0.0)


def amax(x, dim=None, keepdim: bool = False):
    return apply("max", x, axes=axes_of(x, dim), keepdim=keepdim)


def amin(x, dim=None, keepdim: bool = False):
    return -amax(-x, dim, keepdim)


def argmax(x, dim=None, keepdim: bool = False):
    if dim is None:
        return apply("argmax", x.reshape(-1), axis=0, keepdim=False)
    return apply("argmax", x, axis=axes_of(x, dim)[0], keepdim=keepdim)


def argmin(x, dim=None, keepdim: bool = False):
    return argmax(-x, dim, keepdim)


def max(x, dim=None, keepdim: bool = False):
    T = _tensor_type()
    if isinstance(dim, T):           # torch.max(a, b) is the elementwise maximum
        return binary("maximum", x, dim)
    if dim is None:
        return amax(x)
    return MaxResult(amax(x, dim, keepdim), argmax(x, dim, keepdim))


def min(x, dim=None, keepdim: bool = False):
    T = _tensor_type()
    if isinstance(dim, T):
        return binary("minimum", x, dim)
    if dim is None:
        return amin(x)
    return MinResult(amin(x, dim, keepdim), argmin(x, dim, keepdim))


def logsumexp(x, dim, keepdim: bool = False):
    m = amax(x, dim, keepdim=True).detach()
    out = (x - m).exp().sum(dim, keepdim=True).log() + m
    return out if keepdim else out.squeeze(dim)


def all(x, dim=None, keepdim=False):
    return sum((~x.to(bool_)).to(int64), dim, keepdim) == 0


def any(x, dim=None, keepdim=False):
    return sum(x.to(bool_).to(int64), dim, keepdim) > 0


# -- matmul -----------------------------------------------------------------------------------
def matmul(a, b):
    a, b = amp.cast_for_matmul(a, b)
    a, b = coerce(a, b)
    if a.ndim == 1 and b.ndim == 1:
        return matmul(a.reshape(1, -1), b.reshape(-1, 1)).reshape(())
    if a.ndim == 1:
        return matmul(a.reshape(1, -1), b).squeeze(-2)
    if b.ndim == 1:
        return matmul(a, b.reshape(-1, 1)).squeeze(-1)
    if b.ndim == 2 and a.ndim > 2:   # one 2-d matmul instead of a batch of them
        lead = a.shape[:-1]
        return apply("matmul", a.reshape(-1, a.shape[-1]), b).reshape(*lead, b.shape[-1])
    return apply("matmul", a, b)


# -- joining ----------------------------------------------------------------------------------
def cat(tensors, dim: int = 0):
    tensors = list(tensors)
    d = tensors[0].dtype
    for t in tensors[1:]:
        d = promote(d, t.dtype)
    nd = tensors[0].ndim
    return apply("concat", *[t.to(d) for t in tensors], axis=wrap_dim(dim, nd))


def stack(tensors, dim: int = 0):
    tensors = list(tensors)
    dim = wrap_dim(dim, tensors[0].ndim + 1)
    return cat([t.unsqueeze(dim) for t in tensors], dim)
