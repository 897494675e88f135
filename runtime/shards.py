"""State held in shards: under a tensor-parallel plan each rank keeps only its block of a split
parameter and of the optimizer state that follows it, and under a pipeline plan only the stages
that use a parameter keep it, so the memory per rank goes down.

A `Layout` says which block a rank holds: the global array cut along `dim` into `groups` equal
chunks (q|k|v of a fused projection), each chunk cut into one block per rank of `group`; the
rank holds block `index` of every chunk. An `Owned` says that one rank of a group (a pipeline
stage) holds the array and the others an empty placeholder; a `Chain` applies one layout to
another's block (tp blocks owned by one pp stage). A `Sharded` is what such a tensor's storage is between
steps: this rank's block and its layout. A compiled step reads the block as it is; anything else
that needs the value (`.numpy()`, `state_dict()`, an eager op) gets the whole array, gathered
from the group's ranks on demand: a collective, so every rank of the group asks for the same
tensors in the same order (as every rank calls `state_dict()` when a checkpoint is written).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, eq=False)
class Layout:
    dim: int
    groups: int
    group: tuple          # global ranks holding the blocks, in block order
    index: int            # this rank's block
    comm: object          # the communicator that gathers

    def local_shape(self, shape: tuple) -> tuple:
        n = len(self.group)
        return tuple(s // n if i == self.dim else s for i, s in enumerate(shape))

    def same(self, other) -> bool:
        return isinstance(other, Layout) and (self.dim, self.groups, self.group, self.index) == \
            (other.dim, other.groups, other.group, other.index)

    def _chunked(self, shape: tuple) -> tuple:
        d, g = self.dim, self.groups
        return shape[:d] + (g, shape[d] // g) + shape[d + 1:]

    def block(self, full):
        """This rank's block of the global array `full` (a copy: the whole array can be freed)."""
        n, d = len(self.group), self.dim
        x = full.reshape(self._chunked(tuple(full.shape)))
        k = x.shape[d + 1] // n
        idx = (slice(None),) * (d + 1) + (slice(self.index * k, (self.index + 1) * k),)
        return x[idx].reshape(self.local_shape(tuple(full.shape))).copy()

    def gather(self, local):
        """The global array from every rank's block (collective over `group`)."""
        shape = tuple(local.shape)
        x = local.reshape(self._chunked(shape))
        x = self.comm.all_gather(x, self.dim + 1, self.group)
        d = self.dim
        return x.reshape(shape[:d] + (shape[d] * len(self.group),) + shape[d + 1:])


class Sharded:
    """A tensor's storage held as this rank's block (`local`) of a `layout`."""
    __slots__ = ("local", "layout")

    def __init__(self, local, layout: Layout):
        self.local, self.layout = local, layout

    def full(self):
        return self.layout.gather(self.local)

    @property
    def nbytes(self) -> int:
        return self.local.nbytes

    def __array__(self, dtype=None, copy=None):
        import numpy as np
        a = np.asarray(self.full())
        return a if dtype is None else a.astype(dtype)

    def __getattr__(self, name):
        # NOTE: reached only for names a buffer has (shape, reshape, ...): the whole array's
        return getattr(self.full(), name)


@dataclass(frozen=True, eq=False)
class Owned:
    owner: int            # the global rank that holds the array
    group: tuple
    rank: int             # this rank
    shape: tuple          # the array the owner holds
    dtype: object
    comm: object

    def same(self, other) -> bool:
        return isinstance(other, Owned) and (self.owner, self.group, self.rank, self.shape) == \
            (other.owner, other.group, other.rank, other.shape)

    def block(self, full):
        return full if self.rank == self.owner else _zeros(full, (0,), self.dtype)

    def gather(self, local):
        """The owner's array on every rank of the group (a broadcast)."""
        if self.rank != self.owner:
            local = _zeros(local, self.shape, self.dtype)
        return self.comm.broadcast(local, self.owner, self.group)


def _zeros(like, shape, dtype):
    """Zeros on the device of `like` (numpy or CuPy)."""
    import numpy as np
    if isinstance(like, np.ndarray):
        return np.zeros(shape, dtype)
    import cupy
    return cupy.zeros(shape, dtype)


@dataclass(frozen=True, eq=False)
class Chain:
    """`inner` applied to the block `outer` gives: block = inner.block(outer.block(full))."""
    outer: object
    inner: object

    def same(self, other) -> bool:
        return isinstance(other, Chain) and self.outer.same(other.outer) and self.inner.same(other.inner)

    def block(self, full):
        return self.inner.block(self.outer.block(full))

    def gather(self, local):
        return self.outer.gather(self.inner.gather(local))
