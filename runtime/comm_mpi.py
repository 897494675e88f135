"""MPI ranks (mpi4py): the communicator of processes started by `mpiexec`/`mpirun`, `srun` or
`tracegrad launch`, on one machine or many. Buffers are numpy arrays (CPU ranks).

Every collective is MPI's non-blocking form (`Iallreduce`, ...) waited on with a deadline, so a
rank that never arrives makes the others raise `CommTimeout` after `timeout` seconds instead of
hanging; a rank that dies ends the job through the process manager (`mpiexec` kills the rest).
A group other than the whole world gets a sub-communicator of its own, made once.

`send` is an `Isend` of a private copy whose request is kept until `wait_sends()` (or until it is
found complete at a later send), so a send never waits for its receive: two ranks that both send
before they receive (1F1B, ring attention) cannot deadlock, whatever MPI's eager limit.
"""
from __future__ import annotations

import time

import numpy as np

from .comm import Communicator, CommTimeout

_NATIVE = {np.dtype(t) for t in (np.float32, np.float64, np.int32, np.int64, np.int8, np.uint8, np.bool_,
                                  np.float16, np.int16)}


class MPIComm(Communicator):
    """One rank of an MPI job: `MPIComm()` wraps `MPI.COMM_WORLD`."""

    def __init__(self, timeout: float = 300.0, world=None):
        from mpi4py import MPI
        self.MPI = MPI
        self.world = world if world is not None else MPI.COMM_WORLD
        self.rank, self.world_size, self.timeout = self.world.Get_rank(), self.world.Get_size(), timeout
        self._groups: dict[tuple, object] = {tuple(range(self.world_size)): self.world}
        self._ops = {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
        self._tag = 0
        self._sends: list[tuple] = []       # (request, buffer kept alive until it completes, peer)

    # -- plumbing ----------------------------------------------------------------------------
    def sub(self, group: tuple):
        """The MPI communicator of `group` (made on first use by the group's ranks alone)."""
        group = self.check_group(group)
        if group not in self._groups:
            g = self.world.Get_group().Incl(list(group))
            self._groups[group] = self.world.Create_group(g, tag=hash(group) & 0x7FFF)
        return self._groups[group]

    def wait(self, req, what: str, group) -> None:
        """req.Wait() with a deadline: the sleep grows from 0 to 1 ms, so short waits stay short."""
        deadline, nap = time.monotonic() + self.timeout, 0.0
        while not req.Test():
            if time.monotonic() > deadline:
                raise CommTimeout(f"rank {self.rank}: {what} over ranks {tuple(group)} did not complete within "
                                  f"{self.timeout:.0f} s; another rank failed, hangs, or runs a different graph")
            time.sleep(nap)
            nap = min(1e-3, nap + 1e-5)

    @staticmethod
    def _wire(x):
        """A contiguous array MPI can reduce (bf16 travels as float32), and how to get x's dtype back."""
        x = np.ascontiguousarray(x)
        if x.dtype in _NATIVE:
            return x, None
        return x.astype(np.float32), x.dtype

    # -- collectives -------------------------------------------------------------------------
    def all_reduce(self, x, op, group):
        if op not in self._ops:
            raise ValueError(f"all_reduce: op {op!r} is not one of {sorted(self._ops)}")
        send, back = self._wire(x)
        out = np.empty_like(send)
        self.wait(self.sub(group).Iallreduce(send, out, self._ops[op]), f"all_reduce({op})", group)
        if op == "mean":
            out = (out / len(group)).astype(out.dtype, copy=False)
        return out if back is None else out.astype(back)

    def all_gather(self, x, axis, group):
        send, back = self._wire(x)
        out = np.empty((len(group),) + send.shape, send.dtype)
        self.wait(self.sub(group).Iallgather(send, out), "all_gather", group)
        out = np.concatenate(list(out), axis=axis)
        return out if back is None else out.astype(back)

    def reduce_scatter(self, x, axis, group):
        send, back = self._wire(np.moveaxis(x, axis, 0))
        out = np.empty((send.shape[0] // len(group),) + send.shape[1:], send.dtype)
        self.wait(self.sub(group).Ireduce_scatter_block(send, out, self.MPI.SUM), "reduce_scatter", group)
        out = np.ascontiguousarray(np.moveaxis(out, 0, axis))
        return out if back is None else out.astype(back)

    def broadcast(self, x, root, group):
        group = tuple(group)
        buf, back = self._wire(x)
        buf = buf.copy()
        self.wait(self.sub(group).Ibcast(buf, root=group.index(root)), f"broadcast from rank {root}", group)
        return buf if back is None else buf.astype(back)

    def send(self, x, peer, group):
        buf, _ = self._wire(x)
        buf = buf.copy() if buf is x or buf.base is not None else buf    # the program may reuse x at once
        self._sends = [s for s in self._sends if not s[0].Test()]
        self._sends.append((self.world.Isend(buf, dest=peer, tag=17), buf, peer))

    def wait_sends(self):
        while self._sends:
            req, _, peer = self._sends[0]
            self.wait(req, f"send to rank {peer}", (self.rank, peer))
            self._sends.pop(0)

    def recv(self, shape, dtype, device, peer, group):
        out = np.empty(shape, np.dtype(dtype) if np.dtype(dtype) in _NATIVE else np.float32)
        self.wait(self.world.Irecv(out, source=peer, tag=17), f"recv from rank {peer}", (peer, self.rank))
        return out if out.dtype == np.dtype(dtype) else out.astype(dtype)

    def barrier(self, group=None):
        group = tuple(range(self.world_size)) if group is None else tuple(group)
        self.wait_sends()
        self.wait(self.sub(group).Ibarrier(), "barrier", group)

    def broadcast_object(self, obj, root: int = 0):
        """A picklable object from global rank `root` on every rank (bootstrap, checkpoints)."""
        return self.world.bcast(obj, root=root)

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (a failed rank calls this so that none waits for it)."""
        self.world.Abort(code)
