"""The communicator protocol: the collective and point-to-point calls a compiled program makes
(`comm.all_reduce(x, op, group)`, ...), and `SingleProcess`, the communicator of one rank.

A communicator moves buffers (numpy or CuPy arrays) between the ranks of a group, a tuple of
global ranks in a fixed order; every rank of the group makes the same call in the same order.

Point-to-point sends never block: `send` returns before the peer has received (the array is
copied or kept alive until the transfer completes), so schedules in which two ranks both send
before they receive (a 1F1B pipeline's steady state, a ring's shift) run on every communicator.
A program calls `wait_sends()` at its end; a communicator may complete sends earlier (at the next
`recv`, where NCCL issues the pending sends and the receive as one group, or at a collective).
Implementations: `SingleProcess` (here), `LocalComm` (ranks as threads, `comm_local.py`),
`MPIComm` (processes, mpi4py, `comm_mpi.py`), `NCCLComm` (GPUs, CuPy's NCCL, `comm_nccl.py`).
"""
from __future__ import annotations

REDUCE_OPS = ("sum", "mean", "max", "min")


class CommTimeout(RuntimeError):
    """A collective or point-to-point call waited longer than the communicator's timeout."""


class Communicator:
    """What every communicator provides. `rank` and `world_size` are global; `timeout` (seconds)
    bounds every call that waits for another rank, which then raises instead of hanging."""
    rank: int = 0
    world_size: int = 1
    timeout: float = 300.0

    def all_reduce(self, x, op: str, group: tuple):
        """The elementwise `op` (one of REDUCE_OPS) of `x` over the ranks of `group`, on each of them."""
        raise NotImplementedError

    def all_gather(self, x, axis: int, group: tuple):
        """The group's arrays concatenated along `axis`, in group order, on each rank."""
        raise NotImplementedError

    def reduce_scatter(self, x, axis: int, group: tuple):
        """The sum over the group, split along `axis` into len(group) parts; rank i gets part i."""
        raise NotImplementedError

    def broadcast(self, x, root: int, group: tuple):
        """`root`'s array on every rank of the group."""
        raise NotImplementedError

    def send(self, x, peer: int, group: tuple) -> None:
        """Send `x` to global rank `peer`; the peer takes it with `recv`. Returns at once, without
        waiting for the peer (the caller may reuse `x`): see the module's docstring."""
        raise NotImplementedError

    def recv(self, shape: tuple, dtype, device: str, peer: int, group: tuple):
        """The array of `shape` and numpy `dtype` that global rank `peer` sent, on `device`."""
        raise NotImplementedError

    def wait_sends(self) -> None:
        """Complete every send this rank started (raises `CommTimeout` after `timeout`)."""

    def barrier(self, group: tuple | None = None) -> None:
        """Wait until every rank of `group` (default: all) has reached this call."""
        raise NotImplementedError

    def buffer(self, a):
        """A small numpy array (ids, hashes, pickled objects) as a buffer this communicator moves."""
        return a

    def check_group(self, group) -> tuple:
        group = tuple(group)
        if self.rank not in group:
            raise RuntimeError(f"rank {self.rank} runs a collective over ranks {group} it is not part of")
        return group


class SingleProcess(Communicator):
    """The communicator of a program with one rank: every collective is the identity."""

    def _one(self, group):
        if len(group) != 1:
            raise RuntimeError(f"a collective over ranks {tuple(group)} needs a multi-rank communicator "
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

    def barrier(self, group=None):
        pass
