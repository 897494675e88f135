"""GPU ranks: NCCL through CuPy (`cupy.cuda.nccl`), on CuPy buffers, one GPU per rank.

Collectives run on a stream of their own: the stream first waits for the work queued so far on
the compute stream (an event, not a host sync), the NCCL call is queued, and the compute stream
waits for its result the same way, so the host never blocks on a collective. A watchdog thread
checks every collective's completion event; one that is not done within `timeout` seconds
aborts the NCCL communicators, and the next call raises `CommTimeout` (a rank that died or
runs another graph), as PyTorch's NCCL watchdog does. NCCL's unique id is shared through MPI when
the ranks were started by it (`tracegrad launch --gpus`, mpirun), else through a TCP rendezvous
at MASTER_ADDR:MASTER_PORT (`rendezvous.py`).

Point-to-point: NCCL's send waits on the GPU for the matching receive, so two ranks that both
send before they receive (a 1F1B pipeline's steady state, ring attention's shift) would each wait
for the other forever if every send were queued alone. A send is therefore held (a private copy)
until this rank's next `recv`, which issues the held sends and the receive as one NCCL group
(ncclGroupStart/End: NCCL progresses the group's operations together, as Megatron-LM's batched
isend/irecv does); a collective or `wait_sends()` issues what is still held first.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque

import numpy as np

from .comm import Communicator, CommTimeout
from .devices import TypedArray


def _nccl_dtype(nccl, dtype):
    name = np.dtype(dtype).name
    table = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64, "float16": nccl.NCCL_FLOAT16,
             "int32": nccl.NCCL_INT32, "int64": nccl.NCCL_INT64, "uint8": nccl.NCCL_UINT8, "int8": nccl.NCCL_INT8,
             "bool": nccl.NCCL_UINT8, "bfloat16": getattr(nccl, "NCCL_BFLOAT16", 9)}
    return table[name]


class NCCLComm(Communicator):
    def __init__(self, rank: int, world_size: int, device: int, share_id, timeout: float = 300.0):
        import cupy
        from cupy.cuda import nccl
        self.cupy, self.nccl = cupy, nccl
        self.rank, self.world_size, self.timeout = rank, world_size, timeout
        self.device = cupy.cuda.Device(device)
        self.device.use()
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self._share = share_id          # (uid or None, group) -> the group root's uid
        self._comms: dict[tuple, object] = {}
        self._ops = {"sum": nccl.NCCL_SUM, "mean": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}
        self._pending: deque = deque()
        self._sends: list[tuple] = []        # (array, dtype, peer) held until the next recv
        self._failed: str | None = None
        self._closed = False
        threading.Thread(target=self._watch, daemon=True, name="tracegrad-nccl-watchdog").start()
        self.sub(tuple(range(world_size)))

    @classmethod
    def create(cls, rank: int, world_size: int, local_rank: int, timeout: float = 300.0) -> "NCCLComm":
        """The communicator of this process: cuda:<local_rank>, its id shared through MPI or TCP."""
        if any(k in os.environ for k in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "TRACEGRAD_MPI")):
            from mpi4py import MPI
            world, subs = MPI.COMM_WORLD, {}

            def share(uid, group):
                if group not in subs:
                    g = world.Get_group().Incl(list(group))
                    subs[group] = world if len(group) == world.Get_size() else world.Create_group(g)
                return subs[group].bcast(uid, root=0)
        else:
            from .rendezvous import TCPStore
            store = TCPStore(os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", 29500)),
                             rank == 0, timeout)

            def share(uid, group):
                key = "nccl-id-" + "-".join(map(str, group))
                if uid is not None:     # a tuple of 128 signed chars; the store pickles it
                    store.set(key, uid)
                    return uid
                return store.get(key)
        return cls(rank, world_size, local_rank, share, timeout)

    # -- plumbing ----------------------------------------------------------------------------
    def sub(self, group: tuple):
        group = self.check_group(group)
        if group not in self._comms:
            uid = self.nccl.get_unique_id() if self.rank == group[0] else None
            uid = self._share(uid, group)
            self._comms[group] = self.nccl.NcclCommunicator(len(group), uid, group.index(self.rank))
        return self._comms[group]

    def _watch(self) -> None:
        while not self._closed:
            while self._pending:
                event, deadline, what = self._pending[0]
                if event.done:
                    self._pending.popleft()
                elif time.monotonic() > deadline:
                    self._failed = (f"rank {self.rank}: NCCL {what} did not complete within {self.timeout:.0f} s; "
                                    "another rank failed, hangs, or runs a different graph")
                    for c in self._comms.values():
                        c.abort()
                    self._pending.clear()
                    break
                else:
                    break
            time.sleep(0.01)

    def _run(self, what: str, group, launch):
        """Queue `launch(comm, stream_ptr)` on the collective stream between two events."""
        self.wait_sends()
        comm = self.sub(group)
        self._queue(what, lambda s: launch(comm, s))

    def _queue(self, what: str, launch):
        """Queue `launch(stream_ptr)` on the collective stream: it waits for the compute stream's
        work so far, and the compute stream waits for it (events; the host does not block)."""
        if self._failed:
            raise CommTimeout(self._failed)
        compute = self.cupy.cuda.get_current_stream()
        ready = compute.record()
        self.stream.wait_event(ready)
        launch(self.stream.ptr)
        done = self.stream.record()
        compute.wait_event(done)
        self._pending.append((done, time.monotonic() + self.timeout, what))

    def _p2p(self, recv=None) -> None:
        """Issue the held sends, and `recv` (out, dtype, peer) when given, as one NCCL group."""
        sends, self._sends = self._sends, []
        ops = [("send", a, dt, peer) for a, dt, peer in sends] + ([("recv", *recv)] if recv else [])
        if not ops:
            return
        # NOTE: made in one global order (sorted pairs), so that ranks making the pair communicators
        # of a ring on first use cannot each wait for the next
        for pair in sorted({tuple(sorted((self.rank, op[3]))) for op in ops}):
            self.sub(pair)
        comms = [(self.sub(tuple(sorted((self.rank, peer)))), kind, a, dt, peer) for kind, a, dt, peer in ops]

        def launch(stream):
            self.nccl.groupStart()
            try:
                for comm, kind, a, dt, peer in comms:
                    other = 0 if peer < self.rank else 1        # the peer's index in the sorted pair
                    getattr(comm, kind)(a.data.ptr, a.size, _nccl_dtype(self.nccl, dt), other, stream)
            finally:
                self.nccl.groupEnd()
        self._queue(", ".join(f"{k} {'to' if k == 'send' else 'from'} rank {p}" for k, _, _, p in ops), launch)

    def buffer(self, a):
        return self.cupy.asarray(a)

    @staticmethod
    def _raw(x):
        """(cupy array, its element dtype, how to wrap a result like it)."""
        if isinstance(x, TypedArray):
            return x.array, x.dtype, lambda a: TypedArray(a, x.dtype)
        return x, x.dtype, lambda a: a

    # -- collectives -------------------------------------------------------------------------
    def all_reduce(self, x, op, group):
        arr, dt, wrap = self._raw(x)
        arr = self.cupy.ascontiguousarray(arr)
        out = self.cupy.empty_like(arr)
        self._run(f"all_reduce({op})", group, lambda c, s: c.allReduce(
            arr.data.ptr, out.data.ptr, arr.size, _nccl_dtype(self.nccl, dt), self._ops[op], s))
        if op == "mean":       # NOTE: NCCL's ncclAvg needs 2.10+; a scale on the compute stream is as cheap
            if dt.name == "bfloat16":
                return self._scaled_bf16(out.view(self.cupy.uint16), len(group), wrap)
            out /= len(group)
        return wrap(out)

    def _scaled_bf16(self, bits, n, wrap):
        f = (bits.astype(self.cupy.uint32) << 16).view(self.cupy.float32) / n
        u = f.view(self.cupy.uint32)
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16      # round to nearest even
        return wrap(u.astype(self.cupy.uint16))

    def all_gather(self, x, axis, group):
        arr, dt, wrap = self._raw(x)
        arr = self.cupy.ascontiguousarray(arr)
        out = self.cupy.empty((len(group),) + arr.shape, arr.dtype)
        self._run("all_gather", group, lambda c, s: c.allGather(
            arr.data.ptr, out.data.ptr, arr.size, _nccl_dtype(self.nccl, dt), s))
        return wrap(self.cupy.concatenate(list(out), axis=axis))

    def reduce_scatter(self, x, axis, group):
        arr, dt, wrap = self._raw(x)
        arr = self.cupy.ascontiguousarray(self.cupy.moveaxis(arr, axis, 0))
        out = self.cupy.empty((arr.shape[0] // len(group),) + arr.shape[1:], arr.dtype)
        self._run("reduce_scatter", group, lambda c, s: c.reduceScatter(
            arr.data.ptr, out.data.ptr, out.size, _nccl_dtype(self.nccl, dt), self.nccl.NCCL_SUM, s))
        return wrap(self.cupy.ascontiguousarray(self.cupy.moveaxis(out, 0, axis)))

    def broadcast(self, x, root, group):
        group = tuple(group)
        arr, dt, wrap = self._raw(x)
        out = self.cupy.ascontiguousarray(arr).copy()
        self._run(f"broadcast from rank {root}", group, lambda c, s: c.bcast(
            out.data.ptr, out.size, _nccl_dtype(self.nccl, dt), group.index(root), s))
        return wrap(out)

    def send(self, x, peer, group):
        arr, dt, _ = self._raw(x)
        # NOTE: a copy on the compute stream: the program may write over x before the send is issued
        self._sends.append((self.cupy.array(arr, copy=True, order="C"), dt, peer))

    def recv(self, shape, dtype, device, peer, group):
        dt = np.dtype(dtype)
        out = self.cupy.empty(shape, self.cupy.uint16 if dt.name == "bfloat16" else dt)
        self._p2p((out, dt, peer))
        return TypedArray(out, dt) if dt.name == "bfloat16" else out

    def wait_sends(self):
        # NOTE: issuing is enough: later work on either stream is ordered after it, and the
        # watchdog raises for a send whose receive never comes
        self._p2p()

    def barrier(self, group=None):
        group = tuple(range(self.world_size)) if group is None else tuple(group)
        self.all_reduce(self.cupy.zeros(1, self.cupy.float32), "sum", group)
        deadline = time.monotonic() + self.timeout
        while self._pending:
            if self._failed or time.monotonic() > deadline:
                raise CommTimeout(self._failed or f"rank {self.rank}: barrier over ranks {group} timed out")
            time.sleep(1e-4)

    def close(self) -> None:
        self._closed = True
        for c in self._comms.values():
            c.destroy()
        self._comms.clear()
