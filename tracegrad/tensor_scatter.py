"""Writing at indices, and small shape methods: `scatter`/`scatter_`, `index_put`/`index_put_`,
`index_add`/`index_add_`, `scatter_add_`, `masked_select`, `narrow`, `select`, `movedim`,
`swapaxes`, `new_empty`, as Tensor methods and `tg.*` functions.

    out = x.scatter(1, idx, src)           # out[i][idx[i][j]] = src[i][j]
    x.index_put_((rows, cols), v, accumulate=True)

`scatter` is written on the `scatter_add` primitive: the places `index` names are cleared in x
(a scatter of ones marks them) and the sources added there, so it traces and differentiates. As
in PyTorch, which of several sources aimed at one place wins is unspecified (here: their sum).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import functions as F_
from .creation import arange, ones, tensor, zeros, zeros_like
from .dispatch import apply
from .ir.types import int64
from . import tensor as tensor_mod
from .tensor_search import nonzero

if TYPE_CHECKING:     # annotations only: tensor.py imports this module first
    from .tensor import Tensor


def _src_like(self, index, src):
    if isinstance(src, tensor_mod.Tensor):
        return src.to(self.dtype)
    return F_.constant(src, self.dtype, self._type.device).expand(*index.shape)


def scatter(self, dim: int, index, src=None, *, value=None, reduce=None) -> Tensor:
    """x with x[.., index[i..], ..] = src[i..] along `dim` (`reduce="add"` adds instead)."""
    src = value if src is None else src
    if src is None:
        raise TypeError("scatter() needs src (a tensor) or value (a number)")
    dim = dim % self.ndim
    s = _src_like(self, index, src)
    if s.shape != index.shape:
        sl = tuple(slice(0, n) for n in index.shape)
        s = s[sl]
    if reduce in ("add", "sum"):
        return apply("scatter_add", self, index, s, axis=dim)
    if reduce is not None:
        raise NotImplementedError(f"scatter(reduce={reduce!r}): only reduce='add' is supported")
    hits = apply("scatter_add", zeros_like(self), index, ones(*index.shape, dtype=self.dtype, device=self.device),
                 axis=dim)
    placed = apply("scatter_add", zeros_like(self), index, s, axis=dim)
    return F_.where(hits > 0, placed, self)


def scatter_(self, dim: int, index, src=None, *, value=None, reduce=None) -> Tensor:
    """In-place scatter."""
    return self._assign(scatter(self, dim, index, src, value=value, reduce=reduce))


def scatter_add_(self, dim: int, index, src) -> Tensor:
    """In-place scatter_add: x[.., index[i], ..] += src[i]."""
    return self._assign(apply("scatter_add", self, index, src.to(self.dtype), axis=dim % self.ndim))


def _linear_index(self, indices) -> tuple:
    """A tuple of index tensors over the leading dims -> (flat index over them, broadcast shape)."""
    idx = [i if isinstance(i, tensor_mod.Tensor) else _as_tensor(i, self) for i in indices]
    shape = idx[0].shape
    for i in idx[1:]:
        shape = np.broadcast_shapes(tuple(shape), tuple(i.shape))
    flat = None
    for d, i in enumerate(idx):
        n = self.shape[d]
        i = i.to(int64)
        i = F_.where(i < 0, i + n, i).expand(*shape)
        flat = i if flat is None else flat * n + i
    return flat, tuple(shape)


def _as_tensor(i, like):
    return tensor(i, dtype=int64, device=like._type.device)


def index_put(self, indices, values, accumulate: bool = False) -> Tensor:
    """x with x[indices] = values (`accumulate=True`: += , duplicates adding up, as PyTorch)."""
    indices = tuple(indices)
    if not accumulate or any(isinstance(i, tensor_mod.Tensor) and i.dtype.name == "bool" for i in indices):
        out = self.clone()
        if accumulate:
            out[indices] = out[indices] + values
        else:
            out[indices] = values
        return out
    k = len(indices)
    flat, shape = _linear_index(self, indices)
    rest = tuple(self.shape[k:])
    lead = 1
    for n in self.shape[:k]:
        lead *= n
    base = self.reshape(lead, *rest)
    v = values if isinstance(values, tensor_mod.Tensor) else F_.constant(values, self.dtype, self._type.device)
    v = v.to(self.dtype).expand(*shape, *rest).reshape(-1, *rest)
    out = apply("index_add", base, flat.reshape(-1), v, axis=0)
    return out.reshape(*self.shape)


def index_put_(self, indices, values, accumulate: bool = False) -> Tensor:
    """In-place index_put."""
    return self._assign(index_put(self, indices, values, accumulate))


def index_add(self, dim: int, index, source, *, alpha=1) -> Tensor:
    """x with source added at rows `index` along `dim` (times alpha)."""
    src = source * alpha if alpha != 1 else source
    return apply("index_add", self, index, src.to(self.dtype), axis=dim % self.ndim)


def index_add_(self, dim: int, index, source, *, alpha=1) -> Tensor:
    """In-place index_add."""
    return self._assign(index_add(self, dim, index, source, alpha=alpha))


def index_fill(self, dim: int, index, value) -> Tensor:
    """x with the slices at `index` along `dim` set to value."""
    dim = dim % self.ndim
    pos = arange(self.shape[dim], device=self.device)
    hit = (pos.unsqueeze(1) == index.reshape(1, -1)).any(1)
    hit = hit.reshape(*[-1 if a == dim else 1 for a in range(self.ndim)])
    return self.masked_fill(hit, value)


def masked_select(self, mask) -> Tensor:
    """The entries where mask is True, as a 1-d tensor (eager only: the length depends on the mask)."""
    m = mask.expand(*np.broadcast_shapes(tuple(self.shape), tuple(mask.shape)))
    x = self.expand(*m.shape)
    idx = nonzero(m, as_tuple=True)
    return x[idx]


def narrow(self, dim: int, start: int, length: int) -> Tensor:
    """`length` entries along `dim` from `start` (a slice)."""
    idx = [slice(None)] * self.ndim
    idx[dim % self.ndim] = slice(int(start), int(start) + int(length))
    return self[tuple(idx)]


def select(self, dim: int, index: int) -> Tensor:
    """The slice at `index` along `dim`, that dim removed."""
    idx = [slice(None)] * self.ndim
    idx[dim % self.ndim] = int(index)
    return self[tuple(idx)]


def movedim(self, source, destination) -> Tensor:
    """Move dims `source` to positions `destination` (a permute)."""
    src = [s % self.ndim for s in ((source,) if isinstance(source, int) else source)]
    dst = [d % self.ndim for d in ((destination,) if isinstance(destination, int) else destination)]
    order = [i for i in range(self.ndim) if i not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return self.permute(*order)


def swapaxes(self, a: int, b: int) -> Tensor:
    """transpose(a, b)."""
    return self.transpose(a, b)


def new_empty(self, *size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of `size` with this tensor's dtype and device (zero-filled)."""
    size = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else size
    return zeros(*size, dtype=dtype or self.dtype, device=device or self._type.device)


class ScatterMethods:
    """Tensor's scatters, index puts, selections and axis moves (a mixin of `Tensor`)."""
    __slots__ = ()
    scatter = scatter
    scatter_ = scatter_
    scatter_add_ = scatter_add_
    index_put = index_put
    index_put_ = index_put_
    index_add = index_add
    index_add_ = index_add_
    index_fill = index_fill
    masked_select = masked_select
    narrow = narrow
    select = select
    movedim = movedim
    swapaxes = swapaxes
    new_empty = new_empty
    moveaxis = movedim
    swapdims = swapaxes
