"""Sorting and searching: `sort`, `argsort`, `topk`, `nonzero`, `argwhere`, `unique`, as Tensor
methods and `tg.*` functions, with PyTorch's arguments and return types.

    values, indices = x.sort(dim=-1, descending=True)
    x.nonzero()                          # i64[n, x.ndim], eager only (its shape depends on the data)

`sort` on a concrete tensor orders with numpy (stable) and gathers the values, so gradients flow
to `x` through `gather`. Inside `@tg.compile` the order is computed from ranks: element i's place
is the number of elements before it in the order, an n x n comparison along `dim` (kept to
n <= 4096; use `topk` for the few largest of a long axis). `nonzero` and `unique` have
data-dependent shapes, so they need concrete tensors.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import trace as _trace
from .creation import arange, tensor
from .errors import DataDependentError
from .functions import SortResult, sum as _sum, where
from .ir.graph import Value
from .ir.types import int64
from .provenance import where as _where
from .random import topk as _topk

if TYPE_CHECKING:     # annotations only: tensor.py imports this module first
    from .tensor import Tensor

MAX_TRACED_SORT = 4096


def _concrete(x: Tensor) -> bool:
    return _trace.current() is None and not isinstance(x._data, Value)


def sort(self, dim: int = -1, descending: bool = False, stable: bool = False):
    """(values, indices) along `dim`, ascending unless `descending`; ties keep their order."""
    if self.ndim == 0:
        return SortResult(self, self.zeros_like().to(int64))
    dim = dim % self.ndim
    if _concrete(self):
        a = self.numpy()
        order = np.argsort(-a if descending and a.dtype != np.bool_ else a, axis=dim, kind="stable")
        if descending and a.dtype == np.bool_:
            order = np.argsort(~a, axis=dim, kind="stable")
        idx = tensor(order.astype(np.int64), device=self._type.device)
    else:
        idx = _traced_order(self, dim, descending)
    return SortResult(self.gather(dim, idx), idx)


def _traced_order(x: Tensor, dim: int, descending: bool) -> Tensor:
    n = x.shape[dim]
    if n > MAX_TRACED_SORT:
        raise DataDependentError(f"sort inside @tg.compile compares every pair along dim {dim} (size {n} > "
                                 f"{MAX_TRACED_SORT}); use topk(k) for the largest entries, or sort outside the step")
    xd = x.detach()
    a = xd.unsqueeze(dim + 1)          # [.., n, 1, ..]: element i
    b = xd.unsqueeze(dim)              # [.., 1, n, ..]: element j
    shape = [1] * (x.ndim + 1)
    shape[dim], shape[dim + 1] = n, 1
    i = arange(n, device=x.device).reshape(*shape)
    j = i.reshape(*[1 if k == dim else (n if k == dim + 1 else 1) for k in range(x.ndim + 1)])
    before = (b > a) if descending else (b < a)
    before = before | ((b == a) & (j < i))
    rank = before.to(int64).sum(dim + 1)                      # element i's place in the order
    # indices[r] = the i whose rank is r: a one-hot over (i, r), summed over i
    hit = rank.unsqueeze(dim + 1) == j
    return where(hit, i.expand(*hit.shape), 0).sum(dim)


def argsort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
    """The indices that sort along `dim` (sort's second result)."""
    return sort(self, dim, descending, stable)[1]


def msort(self) -> Tensor:
    """sort along dim 0, values only."""
    return sort(self, 0)[0]


def topk(self, k: int, dim: int = -1, largest: bool = True, sorted: bool = True):
    """(values, indices) of the k largest (or smallest) along `dim`."""
    return _topk(self, k, dim, largest, sorted)


def nonzero(self, *, as_tuple: bool = False):
    """Indices of the non-zero entries: i64[n, ndim], or a tuple of ndim i64[n] (eager only)."""
    a = _need_concrete(self, "nonzero")
    idx = np.argwhere(a).astype(np.int64)
    if as_tuple:
        return tuple(tensor(idx[:, d], device=self._type.device) for d in range(max(self.ndim, 1)))
    return tensor(idx, device=self._type.device)


def argwhere(self) -> Tensor:
    """nonzero(): indices of the non-zero entries, i64[n, ndim]."""
    return nonzero(self)


def count_nonzero(self, dim=None) -> Tensor:
    """The number of non-zero entries (over `dim`)."""
    return _sum((self != 0).to(int64), dim)


def unique(self, sorted: bool = True, return_inverse: bool = False, return_counts: bool = False, dim=None):
    """The distinct values (sorted), and optionally where each input went and how often (eager only)."""
    a = _need_concrete(self, "unique")
    vals, inv, counts = np.unique(a, return_inverse=True, return_counts=True, axis=dim)
    out = [tensor(vals, dtype=self.dtype, device=self._type.device)]
    if return_inverse:
        out.append(tensor(inv.reshape(a.shape if dim is None else (-1,)).astype(np.int64), device=self._type.device))
    if return_counts:
        out.append(tensor(counts.astype(np.int64), device=self._type.device))
    return out[0] if len(out) == 1 else tuple(out)


def _need_concrete(x: Tensor, op: str) -> np.ndarray:
    if not _concrete(x):
        raise DataDependentError(f"{op}: the result's shape depends on the values of a traced {x._type}, which "
                                 f"a compiled step cannot have.\n  at {_where()}\nUse a mask with tg.where, or "
                                 f"call {op} outside the step")
    return x.numpy()


class SearchMethods:
    """Tensor's sorting and searching methods (a mixin of `Tensor`)."""
    __slots__ = ()
    sort = sort
    argsort = argsort
    msort = msort
    topk = topk
    nonzero = nonzero
    argwhere = argwhere
    count_nonzero = count_nonzero
    unique = unique
