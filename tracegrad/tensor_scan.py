"""Scans, products and reorderings written on existing ops: `cumsum`, `cumprod`, `prod`, `flip`,
`roll`, `repeat_interleave`, `tile`, `diff`, as Tensor methods and `tg.*` functions.

    x.cumsum(dim=1)              # log2(n) rounds of shift-and-add (Hillis-Steele): exact for ints
    x.prod(dim=0)                # log2(n) rounds of multiplying halves
    k.repeat_interleave(4, dim=1)   # grouped-query attention: each KV head for 4 query heads

Each is a composite of slice/concat/mul/add/take, so it runs eagerly, traces, and differentiates
through the ops it is made of; no new primitive is needed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .creation import arange, full, tensor
from .functions import axes_of, cat
from .ir.types import bool_, int64
from . import tensor as tensor_mod

if TYPE_CHECKING:     # annotations only: tensor.py imports this module first
    from .tensor import Tensor


def _shift(x: Tensor, k: int, dim: int, fill) -> Tensor:
    """x moved k places forward along dim, the first k places filled with `fill`."""
    n = x.shape[dim]
    idx = [slice(None)] * x.ndim
    idx[dim] = slice(0, n - k)
    pad_shape = list(x.shape)
    pad_shape[dim] = k
    return cat([full(pad_shape, fill, dtype=x.dtype, device=x.device), x[tuple(idx)]], dim)


def _scan(x: Tensor, dim: int, combine, fill) -> Tensor:
    dim = dim % max(x.ndim, 1)
    if x.ndim == 0:
        return x
    k = 1
    while k < x.shape[dim]:
        x = combine(x, _shift(x, k, dim, fill))
        k *= 2
    return x


def _acc_dtype(x: Tensor, dtype):
    if dtype is not None:
        return x.to(dtype)
    return x.to(int64) if x.dtype == bool_ or x.dtype.is_integer and x.dtype != int64 else x


def cumsum(self, dim: int, *, dtype=None) -> Tensor:
    """Prefix sums along `dim` (ints and bools accumulate in int64, as PyTorch)."""
    return _scan(_acc_dtype(self, dtype), dim, lambda a, b: a + b, 0)


def cumprod(self, dim: int, *, dtype=None) -> Tensor:
    """Prefix products along `dim`."""
    return _scan(_acc_dtype(self, dtype), dim, lambda a, b: a * b, 1)


def prod(self, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """The product over `dim` (all elements when None) by pairwise halving; exact zeros and signs."""
    x = _acc_dtype(self, dtype)
    if dim is None:
        x, dim = x.reshape(-1), 0
    dim = axes_of(x, dim)[0] if x.ndim else 0
    if x.ndim == 0:
        return x
    while x.shape[dim] > 1:
        n = x.shape[dim]
        if n % 2:
            pad = list(x.shape)
            pad[dim] = 1
            x = cat([x, full(pad, 1, dtype=x.dtype, device=x.device)], dim)
            n += 1
        lo = [slice(None)] * x.ndim
        hi = [slice(None)] * x.ndim
        lo[dim], hi[dim] = slice(0, n // 2), slice(n // 2, n)
        x = x[tuple(lo)] * x[tuple(hi)]
    if x.shape[dim] == 0:
        shape = list(x.shape)
        shape[dim] = 1
        x = full(shape, 1, dtype=x.dtype, device=x.device)
    return x if keepdim else x.squeeze(dim)


def flip(self, *dims) -> Tensor:
    """Reverse the order along each of `dims`."""
    dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
    x = self
    for d in dims:
        d = d % x.ndim
        n = x.shape[d]
        x = x.index_select(d, arange(n - 1, -1, -1, device=x.device))
    return x


def fliplr(self) -> Tensor:
    """flip(x, 1)."""
    return flip(self, 1)


def flipud(self) -> Tensor:
    """flip(x, 0)."""
    return flip(self, 0)


def roll(self, shifts, dims=None) -> Tensor:
    """Rotate by `shifts` places along `dims` (the flattened tensor when None), as PyTorch."""
    if dims is None:
        return roll(self.reshape(-1), shifts, 0).reshape(*self.shape)
    shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(shifts) != len(dims):
        raise ValueError(f"roll: shifts {shifts} and dims {dims} must have the same length")
    x = self
    for s, d in zip(shifts, dims):
        d = d % x.ndim
        n = x.shape[d]
        s = s % n if n else 0
        if s:
            a = [slice(None)] * x.ndim
            b = [slice(None)] * x.ndim
            a[d], b[d] = slice(n - s, n), slice(0, n - s)
            x = cat([x[tuple(a)], x[tuple(b)]], d)
    return x


def repeat_interleave(self, repeats, dim=None, *, output_size=None) -> Tensor:
    """Each element repeated `repeats` times along `dim` (the flattened tensor when None).

    An int: a reshape and expand (traceable). A tensor of counts: an index_select whose indices
    depend on the counts, so the counts must be concrete."""
    x = self.reshape(-1) if dim is None else self
    d = 0 if dim is None else dim % x.ndim
    if isinstance(repeats, tensor_mod.Tensor) and repeats.numel() == 1:
        repeats = int(repeats.item())
    if isinstance(repeats, int):
        shape = list(x.shape)
        y = x.unsqueeze(d + 1)
        y = y.expand(*shape[:d + 1], repeats, *shape[d + 1:])
        return y.reshape(*shape[:d], shape[d] * repeats, *shape[d + 1:])
    counts = np.asarray(repeats.numpy() if isinstance(repeats, tensor_mod.Tensor) else repeats, dtype=np.int64)
    idx = np.repeat(np.arange(x.shape[d]), counts)
    return x.index_select(d, tensor(idx, device=x.device))


def tile(self, *dims) -> Tensor:
    """repeat, with dims padded with 1s on the left to x.ndim."""
    dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
    dims = (1,) * (self.ndim - len(dims)) + tuple(dims)
    return self.repeat(*dims)


def diff(self, n: int = 1, dim: int = -1) -> Tensor:
    """The n-th forward difference along `dim`."""
    x = self
    for _ in range(n):
        d = dim % x.ndim
        a = [slice(None)] * x.ndim
        b = [slice(None)] * x.ndim
        a[d], b[d] = slice(1, None), slice(0, -1)
        x = x[tuple(a)] - x[tuple(b)]
    return x


class ScanMethods:
    """Tensor's scans, products, flips, rolls and repeats (a mixin of `Tensor`)."""
    __slots__ = ()
    cumsum = cumsum
    cumprod = cumprod
    prod = prod
    flip = flip
    fliplr = fliplr
    flipud = flipud
    roll = roll
    repeat_interleave = repeat_interleave
    tile = tile
    diff = diff
