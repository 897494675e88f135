"""`torch.distributed`'s process-group API for a script that runs as one process.

Training scripts import `torch.distributed` and call `init_process_group`, `barrier`,
`all_reduce(t, op=ReduceOp.SUM)` and `destroy_process_group` even when they run alone. These are
those names for a world of one rank: every collective is the identity (a sum, mean, max or min
over one rank is the tensor itself), and in-place forms leave the tensor as it is. Names that the
multi-process runtime in `tracegrad.distributed` defines take precedence: `tracegrad/__init__.py`
attaches only the names it lacks.
"""
from __future__ import annotations

import os

_initialized = {"backend": None}


class ReduceOp:
    """The reduction names of `all_reduce(op=...)` (strings, as tracegrad's collectives take)."""
    SUM = "sum"
    AVG = "mean"
    MAX = "max"
    MIN = "min"
    PRODUCT = "prod"


def is_available() -> bool:
    return True


def is_initialized() -> bool:
    return _initialized["backend"] is not None


def is_torchelastic_launched() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ


def init_process_group(backend: str | None = None, init_method=None, timeout=None, world_size: int = -1,
                       rank: int = -1, store=None, group_name: str = "", pg_options=None, device_id=None) -> None:
    """Join the default group; only a world of one process is accepted here."""
    world = world_size if world_size != -1 else int(os.environ.get("WORLD_SIZE", "1"))
    if world != 1:
        raise RuntimeError(f"init_process_group: a world of {world} processes needs tracegrad's multi-process "
                           "launcher (`tracegrad launch`); in one process, use world_size=1 or "
                           "tg.distributed.run_local for thread ranks")
    _initialized["backend"] = backend or "gloo"


def destroy_process_group(group=None) -> None:
    _initialized["backend"] = None


def get_backend(group=None) -> str:
    if not is_initialized():
        raise RuntimeError("get_backend: the default process group has not been initialized; "
                           "call init_process_group first")
    return _initialized["backend"]


def new_group(ranks=None, timeout=None, backend=None, pg_options=None):
    return tuple(ranks) if ranks is not None else (0,)


def barrier(group=None, async_op: bool = False, device_ids=None) -> None:
    return None


def broadcast(tensor, src: int = 0, group=None, async_op: bool = False):
    """One rank: the tensor already is the source's."""
    return None


def all_gather(tensor_list: list, tensor, group=None, async_op: bool = False):
    """One rank: the list's one entry becomes a copy of `tensor`."""
    if len(tensor_list) != 1:
        raise ValueError(f"all_gather: the list must hold one tensor per rank (1), got {len(tensor_list)}")
    tensor_list[0].copy_(tensor)


def all_gather_into_tensor(output, input, group=None, async_op: bool = False):
    output.copy_(input.reshape(output.shape))


def reduce(tensor, dst: int = 0, op=ReduceOp.SUM, group=None, async_op: bool = False):
    return None


def all_gather_object(object_list: list, obj, group=None) -> None:
    object_list[0] = obj


def broadcast_object_list(object_list: list, src: int = 0, group=None, device=None) -> None:
    return None


NAMES = ["ReduceOp", "is_available", "is_initialized", "is_torchelastic_launched", "init_process_group",
         "destroy_process_group", "get_backend", "new_group", "barrier", "broadcast", "all_gather",
         "all_gather_into_tensor", "reduce", "all_gather_object", "broadcast_object_list"]
