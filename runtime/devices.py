"""Devices and their buffers, one copy of each helper.

`cpu` buffers are numpy arrays; `cuda:N` buffers are CuPy arrays in CuPy's memory pool. CuPy has no
bfloat16, so a bf16 buffer on CUDA is a `TypedArray`: a uint16 CuPy array tagged bf16 (what Triton
kernels take as `*bf16`). Everything here works on buffers and knows no graph.
"""
from __future__ import annotations

import contextlib

import ml_dtypes
import numpy as np

BF16 = np.dtype(ml_dtypes.bfloat16)


class TypedArray:
    """A CuPy array plus the element type Triton should see.  bf16 lives in
    a uint16 buffer: `bf16_array(cupy.empty(shape, cupy.uint16))`."""
    __slots__ = ("array", "dtype")

    def __init__(self, array, dtype=None):
        self.array, self.dtype = array, array.dtype if dtype is None else np.dtype(dtype)
        if self.dtype.itemsize != array.dtype.itemsize:
            raise TypeError(f"TypedArray: {self.dtype} does not fit {array.dtype} elements")

    def data_ptr(self) -> int:
        return self.array.data.ptr

    shape = property(lambda self: self.array.shape)
    strides = property(lambda self: self.array.strides)
    ndim = property(lambda self: self.array.ndim)
    size = property(lambda self: self.array.size)
    device = property(lambda self: self.array.device)

    def get(self) -> np.ndarray:
        """Copy to a numpy array of the logical dtype (bf16 via ml_dtypes)."""
        return self.array.get().view(self.dtype)

    def __repr__(self):
        return f"TypedArray({self.dtype}{list(self.shape)}, device={self.array.device.id})"


def cupy():
    """CuPy, or a clear error when this machine cannot run CUDA tensors."""
    try:
        import cupy
    except ImportError:
        raise RuntimeError("CUDA tensors need CuPy: pip install 'tracegrad[gpu]' on a machine with an "
                           "NVIDIA GPU") from None
    if cupy.cuda.runtime.getDeviceCount() == 0:
        raise RuntimeError("CuPy found no CUDA device")
    return cupy


def bf16_array(array) -> TypedArray:
    """Wrap a CuPy uint16 array (or upload a numpy bf16 array) as bf16."""
    if isinstance(array, np.ndarray):
        array = cupy().asarray(array.view(np.uint16))
    return TypedArray(array, BF16)


# NOTE: the helpers below run on every kernel launch: keep them cheap.

def device_index(device: str) -> int:
    return int(device.split(":")[1]) if ":" in device else 0


def is_cuda(x) -> bool:
    return type(x) is TypedArray or type(x).__module__.startswith("cupy")


def dtype_of(x) -> np.dtype:
    return np.dtype(x.dtype)


def strides_of(x) -> tuple:
    """Strides in elements (numpy and CuPy count bytes)."""
    itemsize = x.dtype.itemsize
    return tuple([s // itemsize for s in x.strides])


def on(device):
    """`with on(device):` for a CuPy device, a no-op when it is the current one."""
    import cupy
    return contextlib.nullcontext() if device.id == cupy.cuda.runtime.getDevice() else device


def map_array(fn, x):
    """Apply a view function to an array, keeping a TypedArray's dtype tag."""
    return TypedArray(fn(x.array), x.dtype) if type(x) is TypedArray else fn(x)


# -- bf16 on CUDA: uint16 bits <-> fp32 ------------------------------------------------------------
def widen(x):
    """A CuPy buffer in a dtype CuPy computes with: bf16 bits -> fp32 (exact)."""
    if type(x) is TypedArray:
        cp = cupy()
        if x.dtype == BF16:
            return (x.array.astype(cp.uint32) << 16).view(cp.float32)
        return x.array
    return x


def round_bf16(x) -> TypedArray:
    """fp32 CuPy array -> bf16 (round to nearest even, NaN stays NaN), as ml_dtypes rounds."""
    cp = cupy()
    u = cp.ascontiguousarray(x, dtype=cp.float32).view(cp.uint32)
    r = ((u + cp.uint32(0x7FFF) + ((u >> 16) & cp.uint32(1))) >> 16).astype(cp.uint16)
    r = cp.where(cp.isnan(x), cp.uint16(0x7FC0), r)
    return TypedArray(r, BF16)


def as_dtype(x, dt: np.dtype):
    """Give a CuPy result the numpy dtype `dt` (bf16 results become TypedArrays)."""
    if dt == BF16:
        return x if type(x) is TypedArray else round_bf16(x)
    return x if x.dtype == dt else x.astype(dt)


# -- making and moving buffers ---------------------------------------------------------------------
def empty(shape, dtype, device: str = "cpu", like=None):
    """An uninitialised buffer of numpy dtype `dtype` on `device`, or of `like`'s kind and device
    (bf16 on CUDA: a TypedArray)."""
    dtype = np.dtype(dtype)
    if like is not None:
        if not is_cuda(like):
            return np.empty(shape, dtype)
        ctx = on(like.device)
    elif device == "cpu":
        return np.empty(shape, dtype)
    else:
        ctx = cupy().cuda.Device(device_index(device))
    import cupy as cp
    with ctx:
        if dtype == BF16:
            return TypedArray(cp.empty(shape, np.uint16), BF16)
        return cp.empty(shape, dtype)


def full(shape, value, dtype, device: str):
    """A buffer of numpy dtype `dtype` on `device` with every element `value`. bf16 on CUDA fills
    the rounded bits at once: computing in fp32 and rounding after would take six times the
    result's memory, too much for a KV cache that fills half the GPU."""
    dtype = np.dtype(dtype)
    if device == "cpu":
        return np.full(shape, value, dtype)
    cp = cupy()
    with cp.cuda.Device(device_index(device)):
        zero = value == 0 and not np.signbit(value)    # NOTE: -0.0 has a sign bit to keep
        if dtype == BF16:
            bits = np.asarray(value, np.float32).astype(BF16).view(np.uint16)
            return TypedArray(cp.zeros(shape, np.uint16) if zero else cp.full(shape, bits, np.uint16), BF16)
        # NOTE: zeros are a memset, at the memory's write speed; a fill is a kernel at half of it
        return cp.zeros(shape, dtype) if zero else cp.full(shape, value, dtype)


def to_numpy(x) -> np.ndarray:
    """A numpy copy of any buffer (a numpy array is returned as it is)."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, TypedArray):
        return x.get()
    return x.get() if is_cuda(x) else np.asarray(x)


def transfer(x, device: str):
    """A copy of buffer `x` on `device`."""
    if device == "cpu":
        return to_numpy(x)
    cp = cupy()
    with cp.cuda.Device(device_index(device)):
        if isinstance(x, np.ndarray):
            if x.dtype == BF16:
                return TypedArray(cp.asarray(np.ascontiguousarray(x).view(np.uint16)), BF16)
            return cp.asarray(x)
        if isinstance(x, TypedArray):
            return TypedArray(cp.array(x.array, copy=True), x.dtype)
        return cp.array(x, copy=True)


def owned_copy(x):
    """A C-contiguous copy of a buffer that shares memory with nothing (0-d stays 0-d)."""
    if type(x) is TypedArray:
        return TypedArray(x.array.copy(order="C"), x.dtype)
    return x.copy(order="C")
