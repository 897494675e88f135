"""Input checks for ops that index with integer tensors: `cross_entropy` / `nll_loss` targets,
`embedding` indices. dtype and shape are checked always (they are static, free even inside a
trace); values are checked when the indices are concrete CPU arrays (eager), at the cost of one
min/max over them. Errors name the op, the shapes and the user's line, as PyTorch's do.

Compiled numpy programs check every `take`/`gather` index before it is used (see
codegen/numpy_program.py), Triton steps inside their kernels (runtime/index_flags.py), so an
out-of-range target inside a step raises there, naming the node's source line. CUDA tensors get
dtype and shape checks only here: a value check would cost a host sync per op. The message is
`runtime.index_range.out_of_range`'s, as everywhere.
"""
from __future__ import annotations

import numpy as np

from .. import provenance, trace as _trace
from ..errors import ShapeError
from ..ir.graph import Value
from ..runtime.index_range import check_host
from ..tensor import Tensor


def _concrete_cpu(t: Tensor):
    """The numpy array of `t` when it is a concrete CPU tensor, else None (traced or on a GPU)."""
    if _trace.current() is not None or isinstance(t._data, Value) or t._type.device != "cpu":
        return None
    return np.asarray(t._data)


def _out_of_range(op: str, arr: np.ndarray, bound: int, allowed: int | None = None) -> None:
    check_host(op, arr, bound, provenance.where(), allowed)


def check_class_target(op: str, input: Tensor, target: Tensor, ignore_index: int) -> None:
    """input [N, C] (or [N, C, d1, ...], or [C]) with class-index target [N] ([N, d1, ...], or [])."""
    if not isinstance(target, Tensor):
        raise TypeError(f"{op}: target must be a tensor, got {type(target).__name__}")
    if target.dtype.is_floating:
        if op == "cross_entropy" and tuple(target.shape) == tuple(input.shape):
            return                                   # class probabilities
        raise TypeError(f"{op}: target of class indices must be an integer tensor (int64), got {target.dtype.name} "
                        f"{list(target.shape)} for input {list(input.shape)}"
                        + ("; float targets are class probabilities and must have the input's shape"
                           if op == "cross_entropy" else "") + f"\n  at {provenance.where()}")
    if target.dtype.name == "bool":
        raise TypeError(f"{op}: target must hold class indices (int64), not bool\n  at {provenance.where()}")
    want = () if input.ndim == 1 else (input.shape[0], *input.shape[2:])
    if tuple(target.shape) != want:
        hint = " (squeeze the last dimension: target.squeeze(-1) / target.view(-1))" \
            if tuple(target.shape) == (*want, 1) else ""
        raise ShapeError(f"{op}: expected target of shape {list(want)} for input {list(input.shape)}, got "
                         f"{list(target.shape)}{hint}\n  at {provenance.where()}")
    arr = _concrete_cpu(target)
    if arr is not None:
        c = input.shape[0] if input.ndim == 1 else input.shape[1]
        _out_of_range(op, arr, c, ignore_index)


def check_embedding_indices(input: Tensor, weight: Tensor) -> None:
    if not isinstance(input, Tensor) or not input.dtype.is_integer:
        got = input.dtype.name if isinstance(input, Tensor) else type(input).__name__
        raise TypeError(f"embedding: indices must be an integer tensor (int64 or int32), got {got}"
                        f"\n  at {provenance.where()}")
    arr = _concrete_cpu(input)
    if arr is not None:
        _out_of_range("embedding", arr, weight.shape[0])
