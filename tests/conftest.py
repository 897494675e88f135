"""Marker handling for the whole test suite.

- ``@pytest.mark.gpu``: needs a CUDA GPU. Skipped unless CuPy imports and
  sees at least one device (so it is skipped on CPU-only machines and in CI).
- ``@pytest.mark.slow``: long-running. Skipped unless ``--runslow`` is given
  or the environment has ``TRACEGRAD_SLOW=1``.

The markers themselves are declared in setup.cfg ([tool:pytest]).
"""
import functools
import os

import pytest


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
