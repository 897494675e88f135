"""Making tensors: `tensor`, `zeros`, `ones`, `full`, `empty`, `arange`, `eye`, `*_like`.

Inside a compiled step, `zeros/ones/full/arange` are recorded as ops; `tensor(data)` makes a
constant that the step lifts to an input (its value is not baked into the program text).
"""
from __future__ import annotations

import numpy as np

from . import tensor as tensor_mod
from .dispatch import apply
from .ir.types import DType, TensorType, bool_, dtype as to_dtype, float32, int64

_default_dtype = [float32]


def get_default_dtype() -> DType:
    return _default_dtype[0]


def set_default_dtype(d) -> None:
    _default_dtype[0] = to_dtype(d)


def normalize_device(device) -> str:
    if device is None:
        return "cpu"
    device = str(getattr(device, "type_str", device))
    if device == "cuda":
        return "cuda:0"
    if device == "cpu" or device.startswith("cuda:"):
        return device
    if device.split(":")[0] in ("mps", "xpu", "hip", "xla", "meta", "vulkan", "mtia"):
        raise ValueError(f"device {device!r} is not supported: tracegrad runs on 'cpu' and NVIDIA 'cuda[:N]' "
                         "only (tg.backends.mps.is_available() is False); use 'cpu' instead")
    raise ValueError(f"unknown device {device!r}; tracegrad knows 'cpu' and 'cuda[:N]'")


def _shape(size) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = size[0]
    return tuple(int(s) for s in size)


def tensor(data, dtype=None, device=None, requires_grad: bool = False):
    Tensor = tensor_mod.Tensor
    if isinstance(data, Tensor):
        data = data.numpy()
    # NOTE: np.float64 is a subclass of float, but keeps its dtype (as in PyTorch)
    python = not isinstance(data, (np.ndarray, np.generic)) and (not np.isscalar(data)
                                                                  or isinstance(data, (float, int, bool)))
    arr = np.asarray(data)
    if dtype is None:
        if arr.dtype == np.float64 and python:
            dtype = get_default_dtype()
        elif arr.dtype.kind in "iu" and python:
            dtype = int64
        else:
            dtype = to_dtype(arr.dtype)
    else:
        dtype = to_dtype(dtype)
    t = Tensor._from_array(np.array(arr, dtype=dtype.np, order="C"), TensorType(arr.shape, dtype))
    device = normalize_device(device)
    if device != "cpu":
        t = t.to(device)
    t.requires_grad = requires_grad
    return t


def as_tensor(data, dtype=None, device=None):
    return tensor(data, dtype=dtype, device=device)


def from_numpy(arr: np.ndarray):
    """A CPU tensor sharing `arr`'s memory (as torch.from_numpy), or a copy where tracegrad's buffers
    cannot alias it (not C-contiguous, or a dtype numpy does not hold natively)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(arr).__name__}")
    dt = to_dtype(arr.dtype)
    if arr.flags.c_contiguous and arr.dtype == dt.np:
        return tensor_mod.Tensor._from_array(arr, TensorType(arr.shape, dt))
    return tensor(arr)


def full(size, fill_value, *, dtype=None, device=None, requires_grad: bool = False):
    if dtype is None:
        dtype = bool_ if isinstance(fill_value, bool) else int64 if isinstance(fill_value, int) else get_default_dtype()
    t = apply("full", shape=_shape((size,) if isinstance(size, int) else size), value=fill_value,
              dtype=to_dtype(dtype), device=normalize_device(device))
    return t.requires_grad_(requires_grad) if requires_grad else t


def zeros(*size, dtype=None, device=None, requires_grad: bool = False):
    return full(_shape(size), 0.0, dtype=dtype or get_default_dtype(), device=device, requires_grad=requires_grad)


def ones(*size, dtype=None, device=None, requires_grad: bool = False):
    return full(_shape(size), 1.0, dtype=dtype or get_default_dtype(), device=device, requires_grad=requires_grad)


def empty(*size, dtype=None, device=None, requires_grad: bool = False):
    return zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)


def _like(fn, t, *args, dtype=None, device=None, **kw):
    return fn(t.shape, *args, dtype=dtype or t.dtype, device=device or t.device, **kw)


def zeros_like(t, *, dtype=None, device=None, requires_grad=False):
    return _like(zeros, t, dtype=dtype, device=device, requires_grad=requires_grad)


def ones_like(t, *, dtype=None, device=None, requires_grad=False):
    return _like(ones, t, dtype=dtype, device=device, requires_grad=requires_grad)


def empty_like(t, *, dtype=None, device=None, requires_grad=False):
    return _like(zeros, t, dtype=dtype, device=device, requires_grad=requires_grad)


def full_like(t, fill_value, *, dtype=None, device=None, requires_grad=False):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    n = max(0, int(np.ceil((end - start) / step)))
    if dtype is None:
        dtype = int64 if all(isinstance(v, int) for v in (start, end, step)) else get_default_dtype()
    dtype = to_dtype(dtype)
    idx = apply("iota", shape=(n,), axis=0, dtype=int64 if dtype.is_integer else dtype,
                device=normalize_device(device))
    if step != 1:
        idx = idx * step
    if start != 0:
        idx = idx + start
    return idx.to(dtype)


def eye(n: int, m: int | None = None, *, dtype=None, device=None):
    m = n if m is None else m
    dev = normalize_device(device)
    rows = apply("iota", shape=(n, m), axis=0, dtype=int64, device=dev)
    cols = apply("iota", shape=(n, m), axis=1, dtype=int64, device=dev)
    return (rows == cols).to(dtype or get_default_dtype())


def linspace(start, end, steps: int, *, dtype=None, device=None):
    if steps == 1:
        return full((1,), float(start), dtype=dtype, device=device)
    return arange(steps, dtype=dtype or get_default_dtype(), device=device) * ((end - start) / (steps - 1)) + start
