"""Running a step on several ranks: the `Mesh`, the communicator of the calling rank, the
process group (`init_process_group`, `process_group.py`), the collectives as tensor functions
(`collectives.py`), and `run_local` (ranks as threads of one process).

    mesh = tg.Mesh(dp=2)

    def rank_main(rank, model, opt):           # each rank: its own copy of the model, same weights
        step = tg.compile(train_step, mesh=mesh)
        for x, y in local_batches(rank):
            step(x, y)                         # x, y: this rank's batch (DDP's semantics)

    tg.distributed.run_local(rank_main, 2, [(m0, o0), (m1, o1)])

Data parallelism (`dp`): every rank passes its local batch; the `dp` stage after the
single-device graph (`ir/passes/parallel/dp.py`) averages the gradients of the state that
`backward()` reaches (parameters) over the dp ranks with an `all_reduce`, which the `bucketed`
stage packs into a few flat buckets (`ir/passes/parallel/buckets.py`), so every rank applies the
same update and the run equals the single-device one on the concatenated batch.

The other axes are passes over the single-device graph (`tracegrad/ir/passes/parallel/`), run
in this order after tracing, each a stage `step.ir()` can print: tensor (`tp`: Megatron
column/row pairs, heads, vocabulary-parallel embedding and cross-entropy; `plan=` overrides a
module's style), context (`cp`: the sequence split zig-zag, ring attention) and pipeline (`pp`:
stages cut at module boundaries, `microbatches=` run in the `schedule=` "1f1b" or "afab").
Every rank returns the single-device values and keeps the whole model, so `state_dict()` works
unchanged on any rank.

    mesh = tg.Mesh(dp=2, tp=2, pp=2, cp=2)          # 16 ranks: tp innermost, then cp, pp, dp
    step = tg.compile(train_step, mesh=mesh, microbatches=4, plan={"*.k_proj": "replicate"})
"""
from __future__ import annotations

import contextlib
import threading

from .. import generator as rng
from ..ir.mesh import Mesh
from ..runtime.comm import CommTimeout, SingleProcess
from ..runtime.comm_local import LocalWorld
from .env import RankEnv, rank_env
from .process_group import (destroy_process_group, get_backend, init_process_group, is_available, is_initialized,
                            world_comm)

_state = threading.local()
_SINGLE = SingleProcess()


def current_comm():
    """The communicator of this rank: a thread rank's of `run_local`, else the process group's, else
    one rank (every collective the identity)."""
    return getattr(_state, "comm", None) or world_comm() or _SINGLE


def get_rank() -> int:
    return current_comm().rank


def get_world_size() -> int:
    return current_comm().world_size


@contextlib.contextmanager
def use_comm(comm):
    old = getattr(_state, "comm", None)
    _state.comm = comm
    try:
        yield comm
    finally:
        _state.comm = old


def run_local(fn, world_size: int, per_rank_args=None) -> list:
    """fn(rank, *per_rank_args[rank]) on `world_size` threads, each its own rank of one
    `LocalWorld` with its own random generator (starting from the caller's state, as processes
    seeded alike); returns the results in rank order, or raises the first rank's error."""
    world = LocalWorld(world_size)
    results, errors = [None] * world_size, [None] * world_size
    rng_state = rng.current_generator().get_state()

    def main(rank):
        gen = rng.Generator()         # as separate processes seeded alike: one stream per rank
        gen.set_state(rng_state)
        try:
            with use_comm(world.comm(rank)), rng.use_generator(gen):
                results[rank] = fn(rank, *(per_rank_args[rank] if per_rank_args else ()))
        except BaseException as e:      # the others would wait at a barrier for this rank forever
            errors[rank] = e
            world.abort()

    threads = [threading.Thread(target=main, args=(r,), name=f"tracegrad-rank{r}") for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = next((e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)),
                 next((e for e in errors if e is not None), None))
    if first is not None:
        raise first
    return results


from .collectives import (ReduceOp, all_gather, all_gather_into_tensor, all_reduce, barrier, broadcast,  # noqa: E402
                          reduce_scatter_tensor)
from .zero import ZeroRedundancyOptimizer, broadcast_object  # noqa: E402
