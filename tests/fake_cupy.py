"""A numpy stand-in for CuPy, so the CUDA runtime's host logic (device placement, bf16 as uint16,
eager CUDA ops, the serving engine's device buffers) runs in tests on a machine without a GPU.

    from fake_cupy import fake_cuda    # a pytest fixture: `cupy` and `cupyx` are the stand-in meanwhile
"""
from __future__ import annotations

import sys

import numpy as np
import pytest


class _FakeCupyArray(np.ndarray):
    """Enough of cupy.ndarray for runtime.devices: .get(), .device, .data.ptr; lives in a 'cupy' module."""

    def get(self):
        return np.array(self).view(np.ndarray)

    @property
    def device(self):
        return _FakeDevice(0)

    @property
    def data(self):
        import types
        return types.SimpleNamespace(ptr=self.ctypes.data)


_FakeCupyArray.__module__ = "cupy._core.core"


class _FakeDevice:
    def __init__(self, i=0):
        self.id, self.compute_capability = i, "90"
        self.attributes = {"MultiProcessorCount": 4}     # few SMs: the kernels that split work by them do

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _fake_cupy():
    import types
    from scipy import special

    def wrap(x):
        return x.view(_FakeCupyArray) if isinstance(x, np.ndarray) and not isinstance(x, _FakeCupyArray) else (
            np.asarray(x).view(_FakeCupyArray) if isinstance(x, np.generic) else x)

    def fn(f):
        def call(*args, **kwargs):
            out = f(*args, **kwargs)
            return tuple(wrap(o) for o in out) if isinstance(out, (tuple, list)) and f is not np.broadcast_shapes \
                else wrap(out)
        return call

    class Module(types.ModuleType):
        def __getattr__(self, name):
            attr = getattr(np, name)
            return fn(attr) if callable(attr) and not isinstance(attr, type) else attr
    cp = Module("cupy")
    cp.ndarray = _FakeCupyArray
    cp.asarray = fn(lambda x, dtype=None: np.array(x, dtype=dtype))
    cp.array = fn(lambda x, dtype=None, copy=True: np.array(x, dtype=dtype, copy=copy))
    cp.cuda = types.SimpleNamespace(Device=_FakeDevice, runtime=types.SimpleNamespace(
        getDeviceCount=lambda: 1, getDevice=lambda: 0, setDevice=lambda i: None))
    cupyx = types.ModuleType("cupyx")
    cupyx.scatter_add = lambda a, idx, v: np.add.at(a, idx, v)
    cupyx.scipy = types.ModuleType("cupyx.scipy")
    cupyx.scipy.special = types.SimpleNamespace(erf=fn(special.erf), expit=fn(special.expit))
    return {"cupy": cp, "cupyx": cupyx, "cupyx.scipy": cupyx.scipy, "cupyx.scipy.special": cupyx.scipy.special}


@pytest.fixture
def fake_cuda(monkeypatch):
    from tracegrad.codegen import eager
    from tracegrad.runtime import cupy_kernels, devices
    for name, mod in _fake_cupy().items():
        monkeypatch.setitem(sys.modules, name, mod)
    cupy_kernels.namespace.cache_clear()
    eager._cuda_kernel.cache_clear()
    yield devices
    cupy_kernels.namespace.cache_clear()
    eager._cuda_kernel.cache_clear()
