"""The eager path: one op at a time, on the CPU (numpy) or on CUDA (CuPy).

Both run the numpy backend's lowering expression of the op through a small cached lambda; on
CUDA the expression sees CuPy in numpy's place, bf16 inputs are widened to fp32 (exact), the op
computes in fp32 and the result is rounded to nearest even, as the numpy backend does on the CPU.
Composites run their decompositions through a builder that computes at once.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np

from ..ir.builder import Builder
from ..ir.ops import get
from ..ir.types import TensorType, bfloat16, dtype as to_dtype, float32
from ..runtime import cupy_kernels, devices
from ..runtime.devices import BF16, TypedArray
from .numpy_backend import lower, namespace
from .numpy_program import keep_freed_memory

_NS = None


def run_op(device: str, op: str, arrays: list, attrs: dict, comm=None, dry: bool = False) -> tuple:
    """Run `op` on the buffers `arrays` (all on `device`); returns a tuple of buffers. A collective
    goes through `comm`, the calling rank's communicator. `dry` runs nothing: the results are new
    buffers of the types the op's rule infers, unfilled (a dry run's: its inputs hold garbage)."""
    if dry:
        ins = [_cuda_type(a, device) for a in arrays]
        return tuple(devices.empty(t.shape, t.dtype.np, device) for t in get(op).infer_types(ins, attrs))
    if get(op).kind == "collective":
        return _run_collective(op, arrays, attrs, comm)
    if device == "cpu":
        return _run_cpu(op, arrays, attrs)
    return _run_cuda(device, op, arrays, attrs)


def _run_collective(op: str, arrays: list, attrs: dict, comm) -> tuple:
    ins = [TensorType(a.shape, to_dtype(a.dtype)) for a in arrays]
    outs = get(op).infer_types(ins, attrs)
    args = [f"a{i}" for i in range(len(arrays))]
    out = eval(f"lambda {', '.join(args)}: {lower(op, args, ins, outs, attrs)}", {**namespace(comm)})(*arrays)
    return () if not outs else (out,)


# -- CPU ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=4096)
def _cpu_kernel(op: str, ins: tuple[TensorType, ...], attrs: tuple) -> tuple[Callable, bool]:
    """(the op's one-line numpy lambda, whether it has several outputs), per op, types and attributes."""
    global _NS
    if _NS is None:
        keep_freed_memory()     # NOTE: eager results are fresh buffers: without it each big one page-faults in
        _NS = namespace()
    args = [f"a{i}" for i in range(len(ins))]
    d = dict(attrs)
    outs = get(op).infer_types(list(ins), d)
    return eval(f"lambda {', '.join(args)}: {lower(op, args, list(ins), outs, d)}", _NS), len(outs) > 1


def eager_cpu_kernel(op: str, ins: tuple, attrs: tuple) -> tuple[Callable, bool]:
    """(numpy lambda, several outputs?) of a primitive for these input types and attribute items."""
    try:
        return _cpu_kernel(op, ins, attrs)
    except TypeError:      # an unhashable attribute: no cache
        return _cpu_kernel.__wrapped__(op, ins, attrs)


_NP_DTYPES: dict = {}
_FAST: dict = {}


def _dtype_of(a) -> object:
    # NOTE: numpy dtype -> DType goes through dtype.name, slow enough to dominate a small eager op
    d = a.dtype
    t = _NP_DTYPES.get(d)
    if t is None:
        t = _NP_DTYPES[d] = to_dtype(d)
    return t


def _run_cpu(op: str, arrays: list[np.ndarray], attrs: dict) -> tuple[np.ndarray, ...]:
    opdef = get(op)
    if opdef.is_composite:
        outs = opdef.decompose(ArrayBuilder(), *arrays, **attrs)
        return outs if isinstance(outs, tuple) else (outs,)
    try:     # NOTE: the fast path: no TensorType built, one dict lookup on shapes and numpy dtypes
        key = (op, tuple((a.shape, a.dtype) for a in arrays), tuple(attrs.items()))
        fn, multi = _FAST[key]
    except (KeyError, TypeError, AttributeError):
        ins = tuple(TensorType(np.shape(a), _dtype_of(np.asarray(a))) for a in arrays)
        try:
            fn, multi = _cpu_kernel(op, ins, tuple(attrs.items()))
            if len(_FAST) < 1 << 16 and all(isinstance(a, np.ndarray) for a in arrays):
                _FAST[key] = fn, multi
        except TypeError:      # an unhashable attribute: no cache
            fn, multi = _cpu_kernel.__wrapped__(op, ins, tuple(attrs.items()))
    out = fn(*arrays)
    if multi:
        return tuple(np.asarray(o) for o in out)
    return () if opdef.side_effect and out is None else (np.asarray(out),)


class ArrayBuilder(Builder):
    """A builder over numpy arrays: rules and decompositions compute at once."""

    def type_of(self, h) -> TensorType:
        return TensorType(h.shape, _dtype_of(h))

    def emit(self, op, inputs, attrs):
        return _run_cpu(op, list(inputs), get(op).normalize_attrs(attrs))


# -- CUDA --------------------------------------------------------------------------------------------
def _f32(t: TensorType) -> TensorType:
    return t.with_(dtype=float32) if t.dtype == bfloat16 else t


@lru_cache(maxsize=4096)
def _cuda_kernel(op: str, ins: tuple, attrs: tuple):
    """The numpy lowering of `op` with every bf16 type read as fp32 (CuPy computes bf16 ops in fp32)."""
    d = dict(attrs)
    outs = get(op).infer_types(list(ins), d)
    fattrs = {k: (float32 if v == bfloat16 else v) for k, v in d.items()}
    args = [f"a{i}" for i in range(len(ins))]
    expr = lower(op, args, [_f32(t) for t in ins], [_f32(t) for t in outs], fattrs)
    return eval(f"lambda {', '.join(args)}: {expr}", cupy_kernels.namespace()), outs


def _cuda_type(a, device: str) -> TensorType:
    dt = to_dtype(BF16) if type(a) is TypedArray and a.dtype == BF16 else to_dtype(a.dtype)
    return TensorType(tuple(a.shape), dt, device)


def _run_cuda(device: str, op: str, arrays, attrs):
    cp = devices.cupy()
    opdef = get(op)
    where = attrs.get("device", device) if op in ("full", "iota", "recv") else device
    if op == "full":
        return (devices.full(attrs["shape"], attrs["value"], attrs["dtype"].np, where),)
    with cp.cuda.Device(devices.device_index(where)):
        if opdef.is_composite:
            outs = opdef.decompose(CudaBuilder(device), *arrays, **attrs)
            return outs if isinstance(outs, tuple) else (outs,)
        ins = tuple(_cuda_type(a, device) for a in arrays)
        fn, outs = _cuda_kernel(op, ins, tuple(attrs.items()))
        res = fn(*[devices.widen(a) for a in arrays])
        res = res if len(outs) > 1 else (res,)
        if opdef.side_effect and not outs:
            return ()
        return tuple(devices.as_dtype(cp.asarray(r), t.dtype.np) for r, t in zip(res, outs))


class CudaBuilder(Builder):
    """Decompositions computing at once on CUDA buffers."""

    def __init__(self, device: str):
        self.device = device

    def type_of(self, h) -> TensorType:
        return _cuda_type(h, self.device)

    def emit(self, op, inputs, attrs):
        attrs = get(op).normalize_attrs(attrs)
        if "device" in attrs and op in ("full", "iota"):
            attrs["device"] = self.device
        return _run_cuda(self.device, op, list(inputs), attrs)
