"""The few numpy routines the generated programs call that are not one numpy expression:
scatter-adds, iota, random draws, erf, and the single-process communicator.

Generated code refers to these by name (`index_add(...)`), so they are the whole runtime
library a numpy program needs besides numpy itself.
"""
from __future__ import annotations

import numpy as np
from scipy import special

from . import rng


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
    return np.ascontiguousarray(np.broadcast_to(ar, shape))


def rand_uniform(state, shape, dtype):
    return rng.draw("uniform", state, shape, dtype)


def rand_normal(state, shape, dtype):
    return rng.draw("normal", state, shape, dtype)


class SingleProcess:
    """The communicator of a program with one rank: every collective is the identity."""
    rank, world_size = 0, 1

    def _one(self, group):
        if len(group) != 1:
            raise RuntimeError(f"a collective over ranks {group} needs a multi-rank communicator "
                               f"(compile with a mesh and launch with `tracegrad launch`)")

    def all_reduce(self, x, op, group):
        self._one(group)
        return x

    def all_gather(self, x, axis, group):
        self._one(group)
        return x

    def reduce_scatter(self, x, axis, group):
        self._one(group)
        return x

    def broadcast(self, x, root, group):
        self._one(group)
        return x

    def send(self, x, peer, group):
        raise RuntimeError("send needs a multi-rank communicator")

    def recv(self, shape, dtype, device, peer, group):
        raise RuntimeError("recv needs a multi-rank communicator")
