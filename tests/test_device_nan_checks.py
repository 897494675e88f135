"""TRACEGRAD_CHECK_NANS=1 on Triton steps: each float result is scanned on the device into one
flag, read once at the end of the step (not once per node), and the first node that made a NaN
is named with the user's line. The same scans run under the interpreter on the CPU; `gpu` tests
run them compiled, and the eager CUDA path too."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.codegen.numpy_program import NaNError

pytest.importorskip("triton")
sys.path.insert(0, os.path.dirname(__file__))
from triton_check import _cache_dir  # noqa: E402,F401  (an autouse fixture: a private kernel cache)


def _step(x):
    y = x.exp() * 2.0                 # finite
    z = (y - 3.0).log()               # the first NaN: log of a negative
    w = z.sum(0) + y.sum(0)           # NaN again, later
    return w.sqrt()


@pytest.fixture
def nans(monkeypatch):
    monkeypatch.setenv("TRACEGRAD_CHECK_NANS", "1")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_triton_step_names_the_first_node_that_made_a_nan(nans, dtype):
    step = tg.compile(_step, backend="triton")
    good = tg.full((4, 3), 2.0).to(getattr(tg, dtype))
    assert np.isfinite(step(good).float().numpy()).all()
    with pytest.raises(NaNError, match=r"first NaN produced by t\d+ = log in k\d.* at test_device_nan_checks.py:\d+.*log\(\)"):
        step(tg.tensor(np.array([[2.0, -5.0, 2.0]] * 4, np.float32)).to(getattr(tg, dtype)))
    assert np.isfinite(step(good).float().numpy()).all()    # the flag was reset


def test_triton_step_reads_the_nan_flag_once(nans):
    def step(x, w):
        return (x @ w).exp().sum()           # a matmul outside the kernels, a fused kernel after it
    step = tg.compile(step, backend="triton")
    step(tg.ones(4, 3), tg.ones(3, 2))
    src = step.ir("kernels")
    host = src.split("@triton.jit")[0]
    assert host.count("nan.scan(") == 1                       # the matmul's result
    assert src.count("tl.atomic_min(nan_ptr, ") >= 2           # the kernel's values, where they are made
    assert host.count("nan.check()") == 1 and "check_nan(" not in host


def test_without_the_variable_nothing_is_scanned():
    step = tg.compile(_step, backend="triton")
    step(tg.ones(4, 3))
    assert "nan." not in step.ir("kernels")


def test_the_scan_kernel_keeps_the_smallest_node_number():
    from tracegrad.runtime.nan_flags import NONE, NanFlags
    f = NanFlags(["a", "b", "c"])
    f.scan(np.ones(5000, np.float32), 0)
    f.check()                                      # no NaN: nothing raised
    x = np.ones(5000, np.float32)
    x[4097] = np.nan                               # in the second block of the scan
    f.scan(x, 2)
    f.scan(x, 1)
    with pytest.raises(NaNError, match="by b$"):
        f.check()
    assert f.buf[0] == NONE


def test_checked_kernels_compile_for_sm90():
    """The scans compile for a GPU (the interpreter lets more through), on the kernel of a bf16
    softmax (a row reduction, half values; scalar and block values alike)."""
    pytest.importorskip("triton.backends.nvidia")
    from test_triton_codegen import compile_for_sm90
    from tracegrad.ir.builder import GraphBuilder
    from tracegrad.ir.passes import decompose, simplify
    from tracegrad.ir.passes.fusion import fuse
    from tracegrad.ir.types import TensorType, bfloat16
    b = GraphBuilder("softmax")
    x = b.input("x", TensorType((64, 512), bfloat16))
    g = simplify(decompose(b.finish([b.softmax(x, axis=1)])))
    assert compile_for_sm90(fuse(g), check_nans=True) >= 1


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gpu_step_names_the_first_node_that_made_a_nan(nans, dtype):
    step = tg.compile(_step, backend="triton")
    good = tg.full((4, 3), 2.0, device="cuda").to(getattr(tg, dtype))
    assert np.isfinite(step(good).float().numpy()).all()
    bad = tg.tensor(np.array([[2.0, -5.0, 2.0]] * 4, np.float32)).to(getattr(tg, dtype)).to("cuda")
    with pytest.raises(NaNError, match=r"first NaN produced by .*log.* at test_device_nan_checks.py:\d+"):
        step(bad)
    assert np.isfinite(step(good).float().numpy()).all()


@pytest.mark.gpu
def test_gpu_eager_ops_are_checked(nans):
    x = tg.tensor([1.0, -1.0], device="cuda")
    with pytest.raises(NaNError, match="log.*test_device_nan_checks.py"):
        x.log()
    x.exp()
