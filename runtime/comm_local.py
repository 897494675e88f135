"""Ranks as threads of one process: `LocalWorld(n).comm(rank)` gives n ranks that are threads of one process, exchanging numpy or
CuPy arrays through shared slots. It is what tests and `tracegrad.distributed.run_local` use to
check a parallel plan against the single-device run without launching processes. Every rank
reduces the group's arrays itself, in rank order, so all ranks get bit-identical results.
"""
from __future__ import annotations

import queue
import threading

import numpy as np

from .comm import Communicator


def _xp(x):
    if isinstance(x, (np.ndarray, np.generic)):     # a 0-d numpy result may be a scalar
        return np
    import cupy
    return cupy


_REDUCE = {"sum": lambda xs: _fold(xs, lambda a, b: a + b), "max": lambda xs: _fold(xs, _maximum),
           "min": lambda xs: _fold(xs, _minimum), "mean": lambda xs: _fold(xs, lambda a, b: a + b) / len(xs)}


def _fold(xs, f):
    out = xs[0]
    for x in xs[1:]:
        out = f(out, x)
    return out


def _maximum(a, b):
    return _xp(a).maximum(a, b)


def _minimum(a, b):
    return _xp(a).minimum(a, b)


class LocalWorld:
    """The state `n` thread ranks share: one slot per rank per group, a barrier per group, and a
    queue per (sender, receiver) pair."""

    def __init__(self, world_size: int, timeout: float = 300.0):
        self.world_size, self.timeout = world_size, timeout
        self._lock = threading.Lock()
        self._barriers: dict[tuple, threading.Barrier] = {}
        self._slots: dict[tuple, list] = {}
        self._queues: dict[tuple, queue.Queue] = {}
        self._aborted = False

    def comm(self, rank: int) -> "LocalComm":
        return LocalComm(self, rank)

    def abort(self) -> None:
        """A rank failed: release the others from every barrier (they raise BrokenBarrierError)."""
        with self._lock:
            self._aborted = True
            for barrier in self._barriers.values():
                barrier.abort()

    def group(self, group: tuple) -> tuple[threading.Barrier, list]:
        with self._lock:
            if self._aborted:
                raise threading.BrokenBarrierError(f"another rank failed before this {len(group)}-rank collective")
            if group not in self._barriers:
                self._barriers[group] = threading.Barrier(len(group), timeout=self.timeout)
                self._slots[group] = [None] * len(group)
            return self._barriers[group], self._slots[group]

    def receive(self, src: int, dst: int):
        """The next array `src` sent `dst`; raises when another rank failed or after `timeout`."""
        chan = self.channel(src, dst)
        waited = 0.0
        while True:
            try:
                return chan.get(timeout=0.05)
            except queue.Empty:
                waited += 0.05
                if self._aborted:
                    raise threading.BrokenBarrierError(f"rank {dst} waited for rank {src}, and a rank failed")
                if waited >= self.timeout:
                    raise TimeoutError(f"rank {dst} waited {self.timeout:.0f} s for an array from rank {src}")

    def channel(self, src: int, dst: int) -> queue.Queue:
        with self._lock:
            return self._queues.setdefault((src, dst), queue.Queue())


class LocalComm(Communicator):
    """One rank of a `LocalWorld`."""

    def __init__(self, world: LocalWorld, rank: int):
        self.world, self.rank, self.world_size, self.timeout = world, rank, world.world_size, world.timeout

    def _exchange(self, x, group, combine):
        """Every rank of `group` puts its array in and gets combine(all of them, in group order);
        combine runs before anyone leaves, while every array is still as it was put in."""
        group = self.check_group(group)
        barrier, slots = self.world.group(group)
        slots[group.index(self.rank)] = x
        barrier.wait()
        out = combine(list(slots))
        barrier.wait()       # nobody reuses its array, or puts in the next one, before all have read
        return out

    def all_reduce(self, x, op, group):
        if op not in _REDUCE:
            raise ValueError(f"all_reduce: op {op!r} is not one of {sorted(_REDUCE)}")
        # NOTE: asarray: numpy adds two 0-d arrays into a scalar, which a Triton kernel cannot load
        return self._exchange(x, group, lambda xs: _xp(x).asarray(_REDUCE[op](xs)).astype(x.dtype, copy=False))

    def all_gather(self, x, axis, group):
        return self._exchange(x, group, lambda xs: _xp(x).concatenate(xs, axis=axis))

    def reduce_scatter(self, x, axis, group):
        size = x.shape[axis] // len(group)
        i = tuple(group).index(self.rank)
        mine = (slice(None),) * axis + (slice(i * size, (i + 1) * size),)
        return self._exchange(x, group, lambda xs: _REDUCE["sum"]([a[mine] for a in xs]))

    def broadcast(self, x, root, group):
        return self._exchange(x, group, lambda xs: xs[tuple(group).index(root)].copy())

    def barrier(self, group=None):
        self._exchange(None, range(self.world_size) if group is None else group, lambda xs: None)

    def send(self, x, peer, group):
        self.world.channel(self.rank, peer).put(x.copy())     # buffered: never waits for the peer

    def recv(self, shape, dtype, device, peer, group):
        x = self.world.receive(peer, self.rank)
        if tuple(x.shape) != tuple(shape):
            raise RuntimeError(f"recv on rank {self.rank}: expected shape {tuple(shape)} from rank {peer}, got "
                               f"{tuple(x.shape)}")
        return x
