"""The Triton backend (under the interpreter on the CPU) on programs that once went wrong: empty
reductions and zero-size kernels, float64 and [1, C, d] cross-entropy, f64 -> bf16 casts, a
fusion that closed a cycle, and TRACEGRAD_CHECK_NANS on every path."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

import tracegrad as tg  # noqa: E402
import tracegrad.nn.functional as F  # noqa: E402
from tracegrad.codegen.numpy_program import NaNError  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from torch_compare import close  # noqa: E402
from triton_check import _cache_dir  # noqa: E402,F401  (an autouse fixture: a private kernel cache)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _triton(fn):
    return tg.compile(fn, backend="triton")


ZERO_SIZE = {
    "sum over an empty axis": (lambda m, x: x.sum(0), (0, 4)),
    "mean of an empty slice * 2": (lambda m, x: x[:, 2:1] * 2, (3, 4)),
    "layer norm of 0 rows": (lambda m, x: (F if m is tg else torch.nn.functional).layer_norm(x, (4,)), (0, 4)),
    "softmax of 0 rows": (lambda m, x: x.softmax(-1), (0, 4)),
    "matmul of 0 rows": (lambda m, x: (x @ m.ones(4, 3)).relu(), (0, 4)),
}


@pytest.mark.parametrize("name", sorted(ZERO_SIZE))
def test_zero_size_programs(name):
    fn, shape = ZERO_SIZE[name]
    got = _triton(lambda x: fn(tg, x))(tg.ones(*shape))
    want = fn(torch, torch.ones(*shape))
    assert tuple(got.shape) == tuple(want.shape)
    close(got, want)


def test_zero_size_training_step():
    w = tg.ones(4, requires_grad=True)

    def step(x):
        loss = F.cross_entropy(F.layer_norm(x, (4,), w), tg.zeros(0, dtype=tg.long), reduction="sum")
        loss.backward()
        return loss

    assert _triton(step)(tg.ones(0, 4)).item() == 0.0
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros(4))


def test_cross_entropy_float64_computes_in_float64():
    x0 = np.random.default_rng(0).standard_normal((3, 5)) * 1e-3 + 1.0
    x = tg.tensor(x0, requires_grad=True)

    def step(x, t):
        loss = F.cross_entropy(x, t)
        loss.backward()
        return loss

    loss = _triton(step)(x, tg.tensor([0, 1, 2]))
    xt = torch.tensor(x0, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(xt, torch.tensor([0, 1, 2]))
    lt.backward()
    assert loss.dtype == tg.float64
    close(loss, lt, rtol=1e-12)     # float64 throughout: fp32 would be off by ~1e-7
    close(x.grad, xt.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("n", [1, 2])
def test_cross_entropy_over_a_class_axis(n):
    x0 = np.random.default_rng(1).standard_normal((n, 5, 3)).astype(np.float32)
    t0 = np.random.default_rng(2).integers(0, 5, (n, 3))
    got = _triton(lambda x, t: F.cross_entropy(x, t))(tg.tensor(x0), tg.tensor(t0))
    close(got, torch.nn.functional.cross_entropy(torch.tensor(x0), torch.tensor(t0)), rtol=1e-5)


def test_float64_to_bfloat16_cast():
    x = [0.3, -1.7, 2.1]
    got = _triton(lambda x: x.bfloat16().float())(tg.tensor(x, dtype=tg.float64))
    close(got, torch.tensor(x, dtype=torch.float64).bfloat16().float())


def test_fusion_never_closes_a_cycle():
    def step(x):
        y = x.abs().sum(0)[tg.tensor([0, 0])]
        y.sum().backward()
        return y

    x0 = np.random.default_rng(3).standard_normal((4, 1)).astype(np.float32)
    x = tg.tensor(x0, requires_grad=True)
    y = _triton(step)(x)
    close(y, np.full(2, np.abs(x0).sum()), rtol=1e-6)
    close(x.grad, 2 * np.sign(x0))


@pytest.mark.parametrize("mode", ["eager", "numpy", "triton"])
def test_check_nans_everywhere(mode, monkeypatch):
    monkeypatch.setenv("TRACEGRAD_CHECK_NANS", "1")
    fn = lambda x: (x.log() * 2).sum()    # noqa: E731
    if mode != "eager":
        fn = tg.compile(fn, backend=mode)
    with pytest.raises(NaNError, match="log.*test_correctness_triton.py"):
        fn(tg.tensor([1.0, -1.0]))
