"""Outputs of a compiled function carry autograd history: `y = tg.compile(model)(x)` then
`loss(y).backward()` fills the same gradients as the eager model (the backward is a second
compiled program that recomputes the forward from the saved inputs)."""
from __future__ import annotations

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.nn as nn
import tracegrad.nn.functional as F
from tracegrad.errors import UnsupportedError


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln, self.fc, self.out, self.drop = nn.LayerNorm(6), nn.Linear(6, 12), nn.Linear(12, 4), nn.Dropout(0.3)

    def forward(self, x):
        h = self.drop(F.gelu(self.fc(self.ln(x))))
        return self.out(h), h.sum(-1)


def _grads(model, x, compiled: bool, backend="numpy"):
    tg.manual_seed(7)
    fn = tg.compile(model, backend=backend) if compiled else model
    for p in model.parameters():
        p.grad = None
    x = x.detach().requires_grad_()
    y, s = fn(x)
    (y.square().mean() + 0.1 * s.sum()).backward()
    return [x.grad.numpy()] + [p.grad.numpy() for p in model.parameters()], fn


@pytest.mark.parametrize("backend", ["numpy", "triton"])
def test_backward_through_a_compiled_module_equals_eager(backend):
    if backend == "triton":
        pytest.importorskip("triton")
    tg.manual_seed(0)
    model = Block()
    x = tg.randn(5, 6)
    want, _ = _grads(model, x, compiled=False)
    got, step = _grads(model, x, compiled=True, backend=backend)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
    got_again, _ = _grads(model, x, compiled=True, backend=backend)     # a second call, the same program
    for g, w in zip(got_again, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_the_compiled_backward_can_be_read():
    w = tg.tensor(np.ones((3, 2), np.float32), requires_grad=True)
    step = tg.compile(lambda x: (x @ w).tanh())
    step(tg.ones(4, 3))
    text = step.ir("backward")        # built on demand, before any backward ran
    assert "matmul" in text and "vjp(tanh)" in text, text


def test_an_output_left_out_of_the_loss_gets_a_zero_cotangent():
    w = tg.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    step = tg.compile(lambda x: (x @ w, (x @ w).exp()))
    y, _ = step(tg.ones(4, 2))
    y.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), np.full((2, 3), 4.0))


def test_no_grad_calls_and_frozen_parameters():
    lin = nn.Linear(3, 2)
    step = tg.compile(lin)
    with tg.no_grad():
        assert not step(tg.ones(1, 3)).requires_grad
    step(tg.ones(1, 3)).sum().backward()
    assert lin.bias.grad is not None
    lin.bias.grad = lin.weight.grad = None
    lin.bias.requires_grad_(False)        # a guard sees it: the step is traced again
    step(tg.ones(1, 3)).sum().backward()
    assert lin.bias.grad is None and lin.weight.grad is not None
    assert "requires_grad" in step.retrace_reasons[-1]


def test_double_backward_is_refused():
    x = tg.ones(3, requires_grad=True)
    y = tg.compile(lambda x: (x * x).sum())(x)
    with pytest.raises(UnsupportedError, match="create_graph"):
        tg.autograd.grad([y], [x], create_graph=True)
