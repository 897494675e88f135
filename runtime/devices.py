"""Devices and their buffers. `cpu` buffers are numpy arrays; `cuda:N` buffers are CuPy arrays
(CuPy's memory pool). Eager ops on CUDA run through the numpy backend's lowerings with CuPy in
numpy's place.
"""
from __future__ import annotations

import numpy as np


def _cupy():
    try:
        import cupy
    except ImportError:
        raise RuntimeError("CUDA tensors need CuPy: pip install 'tracegrad[gpu]' on a machine with an "
                           "NVIDIA GPU") from None
    if cupy.cuda.runtime.getDeviceCount() == 0:
        raise RuntimeError("CuPy found no CUDA device")
    return cupy


def to_numpy(data, type) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data
    return _cupy().asnumpy(data).view(type.dtype.np) if type.dtype.name == "bfloat16" else _cupy().asnumpy(data)


def transfer(data, type, device: str):
    """A copy of buffer `data` (of TensorType `type`) on `device`."""
    if device == "cpu":
        return to_numpy(data, type)
    raise RuntimeError(f"moving tensors to {device!r} needs the CUDA runtime, which this build does not have")


def run_op(device: str, op: str, arrays, attrs):
    raise RuntimeError(f"eager ops on {device!r} need the CUDA runtime, which this build does not have")
