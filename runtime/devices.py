"""Devices and their buffers. `cpu` buffers are numpy arrays; `cuda:N` buffers are CuPy arrays in
CuPy's memory pool. CuPy has no bfloat16, so a bf16 buffer on CUDA is a `TypedArray`: a uint16
CuPy array tagged bf16 (what Triton kernels take as `*bf16`).

Eager ops on CUDA run the numpy backend's lowering expressions with CuPy in numpy's place:
bf16 inputs are widened to fp32 (exact), the op computes in fp32 and the result is rounded
to nearest even, as the numpy backend does on the CPU. Composites run their decompositions.
"""
from __future__ import annotations

import functools

import numpy as np

from ..codegen import numpy_backend, rng
from ..ir.builder import Builder
from ..ir.ops import get
from ..ir.types import TensorType, bfloat16, dtype as to_dtype, float32
from ..codegen.triton_host import BF16, TypedArray


def _cupy():
    try:
        import cupy
    except ImportError:
        raise RuntimeError("CUDA tensors need CuPy: pip install 'tracegrad[gpu]' on a machine with an "
                           "NVIDIA GPU") from None
    if cupy.cuda.runtime.getDeviceCount() == 0:
        raise RuntimeError("CuPy found no CUDA device")
    return cupy


def device_index(device: str) -> int:
    return int(device.split(":")[1]) if ":" in device else 0


def is_cuda_array(x) -> bool:
    return type(x) is TypedArray or type(x).__module__.startswith("cupy")


# -- bf16 on CUDA: uint16 bits <-> fp32 ------------------------------------------------------------
def widen(x):
    """A CuPy buffer in a dtype CuPy computes with: bf16 bits -> fp32 (exact)."""
    if type(x) is TypedArray:
        cp = _cupy()
        if x.dtype == BF16:
            return (x.array.astype(cp.uint32) << 16).view(cp.float32)
        return x.array
    return x


def round_bf16(x) -> TypedArray:
    """fp32 CuPy array -> bf16 (round to nearest even, NaN stays NaN), as ml_dtypes rounds."""
    cp = _cupy()
    u = cp.ascontiguousarray(x, dtype=cp.float32).view(cp.uint32)
    r = ((u + cp.uint32(0x7FFF) + ((u >> 16) & cp.uint32(1))) >> 16).astype(cp.uint16)
    r = cp.where(cp.isnan(x), cp.uint16(0x7FC0), r)
    return TypedArray(r, BF16)


def as_type(x, t: TensorType):
    """Give a CuPy result the dtype of `t` (bf16 results become TypedArrays)."""
    if t.dtype == bfloat16:
        return x if type(x) is TypedArray else round_bf16(x)
    return x if x.dtype == t.dtype.np else x.astype(t.dtype.np)


# -- moving buffers -------------------------------------------------------------------------------
def to_numpy(data, type) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, TypedArray):
        return data.get()
    out = data.get()
    return out.view(type.dtype.np) if type.dtype == bfloat16 and out.dtype == np.uint16 else out


def transfer(data, type, device: str):
    """A copy of buffer `data` (of TensorType `type`) on `device`."""
    if device == "cpu":
        return to_numpy(data, type)
    cp = _cupy()
    with cp.cuda.Device(device_index(device)):
        if isinstance(data, np.ndarray):
            if type.dtype == bfloat16:
                return TypedArray(cp.asarray(np.ascontiguousarray(data).view(np.uint16)), BF16)
            return cp.asarray(data)
        if isinstance(data, TypedArray):
            return TypedArray(cp.array(data.array, copy=True), data.dtype)
        return cp.array(data, copy=True)


def empty(shape, dt, device: str):
    """An uninitialized buffer of dtype `dt` (a DType) on `device`."""
    if device == "cpu":
        return np.empty(shape, dt.np)
    cp = _cupy()
    with cp.cuda.Device(device_index(device)):
        if dt == bfloat16:
            return TypedArray(cp.empty(shape, cp.uint16), BF16)
        return cp.empty(shape, dt.np)


# -- eager ops on CUDA ------------------------------------------------------------------------------
class _CupyKernels:
    """What numpy_kernels gives a generated numpy program, for CuPy arrays."""

    def __init__(self, cp):
        import cupyx
        import cupyx.scipy.special as special
        self.cp, self.cupyx, self.special = cp, cupyx, special

    def erf(self, x):
        return self.special.erf(x)

    def sigmoid(self, x):
        return self.special.expit(x)

    def index_add(self, x, idx, src, axis):
        out = x.copy()
        self.cupyx.scatter_add(out, (slice(None),) * axis + (idx,), src)
        return out

    def scatter_add(self, x, idx, src, axis):
        out = x.copy()
        # CuPy's indices() has no sparse=; open grids from arange broadcast the same way
        where = [self.cp.arange(n).reshape([-1 if a == d else 1 for a in range(idx.ndim)])
                 for d, n in enumerate(idx.shape)]
        where[axis] = idx
        self.cupyx.scatter_add(out, tuple(where), src)
        return out

    def iota(self, shape, axis, dtype):
        cp = self.cp
        ar = cp.arange(shape[axis] if shape else 1, dtype=dtype)
        ar = ar.reshape(tuple(-1 if i == axis else 1 for i in range(len(shape)))) if shape else ar.reshape(())
        return cp.ascontiguousarray(cp.broadcast_to(ar, shape))

    def rand_uniform(self, state, shape, dtype):
        return rng.draw("uniform", state, shape, dtype, xp=self.cp)

    def rand_normal(self, state, shape, dtype):
        return rng.draw("normal", state, shape, dtype, xp=self.cp)


@functools.lru_cache(maxsize=None)
def _namespace():
    cp = _cupy()
    k = _CupyKernels(cp)
    ns = {name: getattr(k, name) for name in ("erf", "sigmoid", "index_add", "scatter_add", "iota",
                                                "rand_uniform", "rand_normal")}
    from ..codegen.numpy_kernels import SingleProcess
    ns.update(np=cp, bfloat16=cp.float32, comm=SingleProcess())
    return ns


def _f32(t: TensorType) -> TensorType:
    return t.with_(dtype=float32) if t.dtype == bfloat16 else t


@functools.lru_cache(maxsize=4096)
def _kernel(op: str, ins: tuple, attrs: tuple):
    """The numpy lowering of `op` with every bf16 type read as fp32 (CuPy computes bf16 ops in fp32)."""
    d = dict(attrs)
    outs = get(op).infer_types(list(ins), d)
    fattrs = {k: (float32 if v == bfloat16 else v) for k, v in d.items()}
    args = [f"a{i}" for i in range(len(ins))]
    expr = numpy_backend.lower(op, args, [_f32(t) for t in ins], [_f32(t) for t in outs], fattrs)
    return eval(f"lambda {', '.join(args)}: {expr}", _namespace()), outs


def _type_of(a, device: str) -> TensorType:
    dt = to_dtype(BF16) if type(a) is TypedArray and a.dtype == BF16 else to_dtype(a.dtype)
    return TensorType(tuple(a.shape), dt, device)


def run_op(device: str, op: str, arrays, attrs):
    """Run one op eagerly on CUDA buffers (composites through their decomposition)."""
    cp = _cupy()
    opdef = get(op)
    with cp.cuda.Device(device_index(device if not op in ("full", "iota", "recv") else attrs.get("device", device))):
        if opdef.is_composite:
            outs = opdef.decompose(CudaBuilder(device), *arrays, **attrs)
            return outs if isinstance(outs, tuple) else (outs,)
        ins = tuple(_type_of(a, device) for a in arrays)
        fn, outs = _kernel(op, ins, tuple(attrs.items()))
        res = fn(*[widen(a) for a in arrays])
        res = res if len(outs) > 1 else (res,)
        if opdef.side_effect and not outs:
            return ()
        return tuple(as_type(cp.asarray(r), t) for r, t in zip(res, outs))


class CudaBuilder(Builder):
    """Decompositions computing at once on CUDA buffers."""

    def __init__(self, device: str):
        self.device = device

    def type_of(self, h) -> TensorType:
        return _type_of(h, self.device)

    def emit(self, op, inputs, attrs):
        attrs = get(op).normalize_attrs(attrs)
        if "device" in attrs and op in ("full", "iota"):
            attrs["device"] = self.device
        return run_op(self.device, op, list(inputs), attrs)
