"""`tg.accelerator`: PyTorch's device-agnostic accelerator API, which current PyTorch examples
query first. tracegrad's one accelerator is CUDA; without a GPU every answer is "none".

    device = tg.accelerator.current_accelerator() if tg.accelerator.is_available() else tg.device("cpu")
"""
from __future__ import annotations

from . import cuda as _cuda
from .tensor import device


def is_available() -> bool:
    return _cuda.is_available()


def device_count() -> int:
    return _cuda.device_count()


def current_accelerator(check_available: bool = False):
    """`tg.device("cuda")` when a GPU is there, else None."""
    return device("cuda") if _cuda.is_available() else None


def current_device_index() -> int:
    return _cuda.current_device()


current_device_idx = current_device_index


def set_device_index(device) -> None:
    _cuda.set_device(device)


set_device_idx = set_device_index


def synchronize(device=None) -> None:
    _cuda.synchronize(device)
