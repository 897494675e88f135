"""Marker handling for the whole test suite.

- ``@pytest.mark.gpu``: needs a CUDA GPU. Skipped unless CuPy imports and
  sees at least one device (so it is skipped on CPU-only machines and in CI).
- ``@pytest.mark.slow``: long-running. Skipped unless ``--runslow`` is given
  or the environment has ``TRACEGRAD_SLOW=1``.

The markers themselves are declared in setup.cfg ([tool:pytest]).

`tg.compile`'s default runs CPU tensors on numba-compiled loops, compiled before a step's first
call. The modules in NUMPY_MODULES compile dozens of step shapes (a serving engine's buckets,
generation's steps) to test what the steps compute, not how: they run on the numpy program
(TRACEGRAD_CPU_BACKEND=numpy), as the loops' cold compile would take minutes of CI's two cores.
The loops are checked against numpy in test_cpu_*.py and test_serve_decode.py.
"""
import functools
import os

import pytest


NUMPY_MODULES = {"test_serve_engine", "test_serve_decode", "test_serve_server", "test_generate"}


@pytest.fixture(autouse=True)
def _numpy_for_shape_heavy_modules(request, monkeypatch):
    if request.module.__name__ in NUMPY_MODULES and "TRACEGRAD_CPU_BACKEND" not in os.environ:
        monkeypatch.setenv("TRACEGRAD_CPU_BACKEND", "numpy")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked slow (same as TRACEGRAD_SLOW=1)")


@functools.lru_cache(maxsize=None)
def cuda_available() -> bool:
    """True when CuPy is installed and sees a CUDA device; never raises."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no cupy, no driver, no device, broken install
        return False


def pytest_collection_modifyitems(config, items):
    run_slow = (config.getoption("--runslow")
                or os.environ.get("TRACEGRAD_SLOW", "").lower() in ("1", "true", "yes"))
    skip_slow = pytest.mark.skip(reason="slow: use --runslow or TRACEGRAD_SLOW=1")
    skip_gpu = pytest.mark.skip(reason="gpu: no CUDA GPU visible")
    for item in items:
        if item.get_closest_marker("slow") and not run_slow:
            item.add_marker(skip_slow)
        # cuda_available() is only probed when a gpu test was collected.
        if item.get_closest_marker("gpu") and not cuda_available():
            item.add_marker(skip_gpu)
