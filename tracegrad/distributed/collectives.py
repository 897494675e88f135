"""The collectives as tensor functions, in `torch.distributed`'s terms: in place on the tensor
given, eagerly (through the communicator of this rank) or inside a compiled step (recorded as
collective ops of the graph).

    t = tg.ones(4) * (tg.distributed.get_rank() + 1)
    tg.distributed.all_reduce(t)                 # t: the sum over every rank, on every rank
    tg.distributed.all_reduce(t, op=tg.distributed.ReduceOp.AVG)

`group`: None (every rank) or a tuple of global ranks.
"""
from __future__ import annotations

from ..dispatch import apply
from .. import trace


class ReduceOp:
    SUM, AVG, MAX, MIN = "sum", "mean", "max", "min"


def _group(group) -> tuple:
    from . import get_world_size   # NOTE: the package's __init__ imports this module first
    if group is None:
        return tuple(range(get_world_size()))
    return tuple(getattr(group, "ranks", group))


class _Done:
    """What `async_op=True` returns: the work is already done (a compiled step overlaps instead)."""

    def wait(self, timeout=None) -> bool:
        return True

    def is_completed(self) -> bool:
        return True


def _result(async_op):
    return _Done() if async_op else None


def all_reduce(tensor, op: str = ReduceOp.SUM, group=None, async_op: bool = False):
    """tensor <- the reduction (`op`: ReduceOp.SUM, AVG, MAX, MIN) of `tensor` over the group."""
    op = {"avg": "mean", "average": "mean"}.get(str(op).lower(), str(op).lower())
    tensor._assign(apply("all_reduce", tensor, op=op, group=_group(group)))
    return _result(async_op)


def broadcast(tensor, src: int = 0, group=None, async_op: bool = False):
    """tensor <- global rank `src`'s tensor."""
    tensor._assign(apply("broadcast", tensor, root=src, group=_group(group)))
    return _result(async_op)


def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op: bool = False):
    """output <- every rank's input, concatenated along the first axis in rank order."""
    output_tensor._assign(apply("all_gather", input_tensor, axis=0, group=_group(group)))
    return _result(async_op)


def all_gather(tensor_list: list, tensor, group=None, async_op: bool = False):
    """tensor_list[i] <- rank i's tensor."""
    g = _group(group)
    out = apply("all_gather", tensor.unsqueeze(0), axis=0, group=g)
    for i, t in enumerate(tensor_list):
        t._assign(out[i])
    return _result(async_op)


def reduce_scatter_tensor(output, input, op: str = ReduceOp.SUM, group=None, async_op: bool = False):
    """output <- part `i` (along the first axis) of the sum of every rank's input, on the i-th rank."""
    g = _group(group)
    out = apply("reduce_scatter", input, axis=0, group=g)
    output._assign(out / len(g) if str(op).lower() in ("mean", "avg") else out)
    return _result(async_op)


def barrier(group=None, async_op: bool = False):
    """Wait until every rank of the group gets here (eagerly; a no-op inside a compiled step)."""
    from . import current_comm   # NOTE: the package's __init__ imports this module first
    if trace.current() is None:
        current_comm().barrier(None if group is None else _group(group))
    return _result(async_op)
