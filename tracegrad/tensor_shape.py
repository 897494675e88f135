"""Tensor's shape methods (reshape, views, transposes, squeezing, expanding, splitting, the
triangles): the mixin `TensorShape`, between `tensor_math.TensorMath` and
`tensor_methods.TensorMethods` in `Tensor`'s bases. The names and arguments are PyTorch's.
"""
from __future__ import annotations

import math

from . import functions as F_
from .dispatch import apply
from .ir.types import bool_, int64
from .tensor_math import TensorMath


def _sizes(args) -> tuple:
    """`f(2, 3)` and `f((2, 3))` alike."""
    return tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else tuple(args)


class TensorShape(TensorMath):
    __slots__ = ()

    # -- shape --------------------------------------------------------------------------------
    def reshape(self, *shape):
        """The same elements in a new shape; one size may be -1 (inferred)."""
        shape = list(_sizes(shape))
        if shape.count(-1) > 1:
            raise ValueError("only one dimension can be -1")
        if -1 in shape:
            known = math.prod(s for s in shape if s != -1)
            if known == 0 or self.numel() % known:
                raise RuntimeError(f"shape {shape} is invalid for input of size {self.numel()}")
            shape[shape.index(-1)] = self.numel() // known
        shape = tuple(shape)
        if math.prod(shape) != self.numel():
            raise RuntimeError(f"shape {list(shape)} is invalid for input of size {self.numel()}")
        if shape == self.shape:
            return self
        out = apply("reshape", self, shape=shape)
        # a view: in-place updates reach self (see Tensor._assign)
        out._view = (self, lambda new: new.reshape(*self.shape), lambda: apply("reshape", self, shape=shape))
        return out

    def view(self, *shape):
        """As `reshape` (tensors here have no separate storage to share)."""
        return self.reshape(*shape)

    def view_as(self, other):
        """This tensor in `other`'s shape."""
        return self.reshape(*other.shape)

    def reshape_as(self, other):
        """This tensor in `other`'s shape."""
        return self.reshape(*other.shape)

    def permute(self, *dims):
        """The axes reordered: `x.permute(0, 2, 1)`."""
        dims = tuple(F_.wrap_dim(d, self.ndim) for d in _sizes(dims))
        if sorted(dims) != list(range(self.ndim)):
            raise RuntimeError(f"permute: {list(_sizes(dims))} is not a permutation of the {self.ndim} dims "
                               f"of a tensor of shape {list(self.shape)}")
        if dims == tuple(range(self.ndim)):
            return self
        out = apply("permute", self, dims=dims)
        out._view = (self, lambda new: new.permute(*sorted(range(len(dims)), key=dims.__getitem__)),
                     lambda: apply("permute", self, dims=dims))
        return out

    def transpose(self, dim0: int, dim1: int):
        """Axes `dim0` and `dim1` swapped."""
        dims = list(range(self.ndim))
        d0, d1 = F_.wrap_dim(dim0, self.ndim), F_.wrap_dim(dim1, self.ndim)
        if self.ndim < 2:
            return self
        dims[d0], dims[d1] = dims[d1], dims[d0]
        return self.permute(*dims)

    def t(self):
        """The transpose of a matrix (a 0-d or 1-d tensor is returned as it is)."""
        return self.transpose(0, 1) if self.ndim == 2 else self

    @property
    def T(self):
        """All axes reversed."""
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self):
        """The last two axes swapped (a batch of matrices transposed)."""
        return self.transpose(-2, -1)

    def contiguous(self, memory_format=None):
        """This tensor (layouts are the runtime's business)."""
        return self

    def clone(self, memory_format=None):
        """A new tensor with the same values, on the autograd tape."""
        return self + 0 if self.dtype != bool_ else self.to(int64).to(bool_)

    def unsqueeze(self, dim: int):
        """A new axis of size 1 at `dim`."""
        dim = F_.wrap_dim(dim, self.ndim + 1)
        return self.reshape(*self.shape[:dim], 1, *self.shape[dim:])

    def squeeze(self, dim=None):
        """Axes of size 1 removed (all, or those in `dim`)."""
        if dim is None:
            return self.reshape(*[s for s in self.shape if s != 1])
        dims = {F_.wrap_dim(d, self.ndim) for d in ((dim,) if isinstance(dim, int) else dim)}
        return self.reshape(*[s for i, s in enumerate(self.shape) if not (i in dims and s == 1)])

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        """Axes `start_dim`..`end_dim` merged into one."""
        if self.ndim == 0:
            return self.reshape(1)
        s, e = F_.wrap_dim(start_dim, self.ndim), F_.wrap_dim(end_dim, self.ndim)
        if s > e:
            raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
        return self.reshape(*self.shape[:s], math.prod(self.shape[s:e + 1]), *self.shape[e + 1:])

    def expand(self, *sizes):
        """Size-1 axes broadcast to `sizes` (-1 keeps an axis); no copy."""
        sizes = _sizes(sizes)
        lead = len(sizes) - self.ndim
        shape = tuple(self.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes))
        return self if shape == self.shape else apply("expand", self, shape=shape)

    def expand_as(self, other):
        """This tensor broadcast to `other`'s shape."""
        return self.expand(*other.shape)

    def broadcast_to(self, *sizes):
        """As `expand`."""
        return self.expand(*sizes)

    def repeat(self, *reps):
        """The tensor tiled `reps[i]` times along each axis."""
        reps = _sizes(reps)
        x = self.reshape(*([1] * (len(reps) - self.ndim)), *self.shape)
        inter = []
        for s in x.shape:
            inter += [1, s]
        x = x.reshape(*inter)
        x = x.expand(*[v for s, r in zip(x.shape[1::2], reps) for v in (r, s)])
        return x.reshape(*[s * r for s, r in zip(x.shape[1::2], reps)])

    def split(self, split_size, dim: int = 0):
        """Pieces of `split_size` along `dim` (the last may be smaller), or of the sizes in a list."""
        dim = F_.wrap_dim(dim, self.ndim)
        n = self.shape[dim]
        sizes = [split_size] * (n // split_size) + ([n % split_size] if n % split_size else []) \
            if isinstance(split_size, int) else list(split_size)
        if sum(sizes) != n:
            raise RuntimeError(f"split: sizes {sizes} do not add up to {n}, the size of dim {dim}")
        out, at = [], 0
        for s in sizes:
            idx = [slice(None)] * self.ndim
            idx[dim] = slice(at, at + s)
            out.append(self[tuple(idx)])
            at += s
        return tuple(out)

    def chunk(self, chunks: int, dim: int = 0):
        """At most `chunks` equal pieces along `dim`."""
        n = self.shape[F_.wrap_dim(dim, self.ndim)]
        return self.split(max(-(-n // chunks), 1), dim)

    def unbind(self, dim: int = 0):
        """The slices along `dim`, each without that axis."""
        return tuple(t.squeeze(dim) for t in self.split(1, dim))

    def tril(self, diagonal: int = 0):
        """The lower triangle of the last two axes (others zero)."""
        return self._triangle(diagonal, lower=True)

    def triu(self, diagonal: int = 0):
        """The upper triangle of the last two axes (others zero)."""
        return self._triangle(diagonal, lower=False)

    def _triangle(self, k, lower):
        r, c = self.shape[-2:]
        dev = self._type.device
        rows = apply("iota", shape=(r, c), axis=0, dtype=int64, device=dev)
        cols = apply("iota", shape=(r, c), axis=1, dtype=int64, device=dev)
        keep = (cols - rows <= k) if lower else (cols - rows >= k)
        return F_.where(keep, self, F_.constant(False if self.dtype == bool_ else 0, self.dtype, dev))

