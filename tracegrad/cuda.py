"""`tg.cuda`: PyTorch's `torch.cuda` queries, answered from CuPy when there is a GPU and with
"no GPU" (False, 0, no-ops) when there is none or CuPy is not installed.

    device = "cuda" if tg.cuda.is_available() else "cpu"
    tg.cuda.manual_seed(1337); tg.cuda.synchronize()
    print(tg.cuda.get_device_name(0), tg.cuda.max_memory_allocated() / 2**20, "MiB")

Memory numbers are CuPy's memory pool: `memory_allocated` is what live tensors use,
`memory_reserved` what the pool holds; the peak is tracked since the last `reset_peak_memory_stats`
only at the moments these functions are called (CuPy keeps no peak of its own).
"""
from __future__ import annotations

import contextlib
import functools

from . import amp as _amp
from .random import manual_seed as seed_all


@functools.lru_cache(maxsize=1)
def _cupy():
    """CuPy when it is installed and sees a device, else None (never raises)."""
    try:
        import cupy
        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:    # ImportError, or CUDARuntimeError without a driver
        return None


def is_available() -> bool:
    return _cupy() is not None


def is_initialized() -> bool:
    return is_available()


def device_count() -> int:
    cp = _cupy()
    return cp.cuda.runtime.getDeviceCount() if cp else 0


def _need(what: str):
    cp = _cupy()
    if cp is None:
        raise RuntimeError(f"tg.cuda.{what}: no CUDA GPU is available (CuPy is not installed or sees no "
                           "device); check tg.cuda.is_available() first")
    return cp


def _index(device) -> int:
    if device is None:
        return current_device()
    if isinstance(device, int):
        return device
    s = str(device)
    return int(s.split(":")[1]) if ":" in s else 0


def current_device() -> int:
    cp = _cupy()
    return cp.cuda.runtime.getDevice() if cp else 0


def set_device(device) -> None:
    if _cupy() is not None:
        _cupy().cuda.runtime.setDevice(_index(device))


@contextlib.contextmanager
def device(device):
    """`with tg.cuda.device(1):` makes that device current inside the block."""
    cp = _cupy()
    if cp is None:
        yield
        return
    with cp.cuda.Device(_index(device)):
        yield


def synchronize(device=None) -> None:
    cp = _cupy()
    if cp is not None:
        cp.cuda.runtime.deviceSynchronize()


def manual_seed(seed: int) -> None:
    """Seeds tracegrad's generator, which draws CUDA numbers too (one stream per device)."""
    seed_all(seed)


manual_seed_all = manual_seed


def get_device_name(device=None) -> str:
    props = _need("get_device_name").cuda.runtime.getDeviceProperties(_index(device))
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def get_device_capability(device=None) -> tuple[int, int]:
    props = _need("get_device_capability").cuda.runtime.getDeviceProperties(_index(device))
    return int(props["major"]), int(props["minor"])


def get_device_properties(device=None):
    from types import SimpleNamespace
    props = _need("get_device_properties").cuda.runtime.getDeviceProperties(_index(device))
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return SimpleNamespace(name=name, major=int(props["major"]), minor=int(props["minor"]),
                           total_memory=int(props["totalGlobalMem"]),
                           multi_processor_count=int(props["multiProcessorCount"]))


def is_bf16_supported(including_emulation: bool = True) -> bool:
    return is_available() and get_device_capability()[0] >= 8


_peak = {"allocated": 0, "reserved": 0}


def memory_allocated(device=None) -> int:
    cp = _cupy()
    n = cp.get_default_memory_pool().used_bytes() if cp else 0
    _peak["allocated"] = max(_peak["allocated"], n)
    return n


def memory_reserved(device=None) -> int:
    cp = _cupy()
    n = cp.get_default_memory_pool().total_bytes() if cp else 0
    _peak["reserved"] = max(_peak["reserved"], n)
    return n


def max_memory_allocated(device=None) -> int:
    return max(_peak["allocated"], memory_allocated(device))


def max_memory_reserved(device=None) -> int:
    return max(_peak["reserved"], memory_reserved(device))


def reset_peak_memory_stats(device=None) -> None:
    _peak["allocated"] = _peak["reserved"] = 0


reset_max_memory_allocated = reset_peak_memory_stats


def mem_get_info(device=None) -> tuple[int, int]:
    """(free, total) bytes of the device."""
    return tuple(_need("mem_get_info").cuda.runtime.memGetInfo())


def empty_cache() -> None:
    cp = _cupy()
    if cp is not None:
        cp.get_default_memory_pool().free_all_blocks()


class amp:  # noqa: N801  (a namespace, as torch.cuda.amp)
    """`torch.cuda.amp`: the deprecated spellings of `tg.amp.GradScaler("cuda")` and autocast."""

    class GradScaler(_amp.GradScaler):
        def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                     enabled=True):
            if enabled and not is_available():   # PyTorch too warns and disables itself without CUDA
                import warnings
                warnings.warn("torch.cuda.amp.GradScaler is enabled, but CUDA is not available; disabling it")
                enabled = False
            super().__init__("cuda" if is_available() else "cpu", init_scale, growth_factor, backoff_factor,
                             growth_interval, enabled)

    @staticmethod
    def autocast(enabled: bool = True, dtype=None, cache_enabled=None):
        return _amp.autocast("cuda", dtype=dtype, enabled=enabled)
