"""Gradients that once came out silently wrong, checked against PyTorch CPU (float64, so the
tolerances only absorb summation order): detach/no_grad in a compiled function differentiated
from outside, `%`, a learnable attention mask, grad of grad through cross-entropy and attention,
std/norm at zero, and grads of functions that do not depend on their argument."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tracegrad as tg
import tracegrad.nn.functional as F

from torch_compare import close

X0 = np.array([0.5, -1.0, 1.2])


def _grad_outside(f, x0=X0):
    """Gradient of sum(f(x)) when f is compiled and the sum and backward run eagerly."""
    x = tg.tensor(x0, requires_grad=True)
    tg.compile(f)(x).sum().backward()
    return x.grad


def _torch_grad(f, x0=X0):
    x = torch.tensor(x0, requires_grad=True)
    f(x).sum().backward()
    return x.grad


def test_detach_in_compiled_function_stops_the_gradient():
    close(_grad_outside(lambda x: x.tanh().detach() * x), _torch_grad(lambda x: x.tanh().detach() * x))


def test_no_grad_in_compiled_function_stops_the_gradient():
    def f(x):
        with tg.no_grad():
            z = x.tanh()
        return z * x

    close(_grad_outside(f), _torch_grad(lambda x: x.tanh().detach() * x))


def test_embedding_padding_row_gets_no_gradient_when_compiled():
    w = tg.tensor(np.arange(8.0).reshape(4, 2), requires_grad=True)
    out = tg.compile(lambda w: F.embedding(tg.tensor([0, 1, 1]), w, padding_idx=1))(w)
    (out * out).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy()[1], 0.0)
    np.testing.assert_allclose(w.grad.numpy()[0], 2 * np.arange(2.0))


def test_mod_gives_the_divisor_a_gradient():
    xs, ys = np.array([0.5, -1.0, 1.2, 3.7]), np.array([0.3, 0.7, -0.5, 1.1])
    x, y = tg.tensor(xs, requires_grad=True), tg.tensor(ys, requires_grad=True)
    (x % y).sum().backward()
    xt, yt = torch.tensor(xs, requires_grad=True), torch.tensor(ys, requires_grad=True)
    torch.remainder(xt, yt).sum().backward()
    close(x.grad, xt.grad)
    close(y.grad, yt.grad)


def _sdpa_loss(lib, fn, q, m):
    o = fn(q, q * 0.5, q * 2, attn_mask=m)
    return (o * o).sum()


def test_float_attn_mask_gets_a_gradient():
    rng = np.random.default_rng(0)
    q0, m0 = rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((3, 3))
    q, m = tg.tensor(q0, requires_grad=True), tg.tensor(m0, requires_grad=True)
    _sdpa_loss(tg, F.scaled_dot_product_attention, q, m).backward()
    qt, mt = torch.tensor(q0, requires_grad=True), torch.tensor(m0, requires_grad=True)
    _sdpa_loss(torch, torch.nn.functional.scaled_dot_product_attention, qt, mt).backward()
    close(q.grad, qt.grad)
    close(m.grad, mt.grad)


def test_cross_entropy_hessian_vector_product():
    rng = np.random.default_rng(1)
    x0, v0, t = rng.standard_normal((3, 5)), rng.standard_normal((3, 5)), [0, 4, 2]
    g = lambda x: tg.grad(lambda x: F.cross_entropy(x, tg.tensor(t)))(x)
    hv = tg.grad(lambda x: (g(x) * tg.tensor(v0)).sum())(tg.tensor(x0))
    xt = torch.tensor(x0, requires_grad=True)
    gt, = torch.autograd.grad(torch.nn.functional.cross_entropy(xt, torch.tensor(t)), [xt], create_graph=True)
    hvt, = torch.autograd.grad((gt * torch.tensor(v0)).sum(), [xt])
    close(hv, hvt)


def test_attention_grad_of_grad():
    rng = np.random.default_rng(2)
    q0, m0 = rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((3, 3))
    inner = lambda q, m: tg.grad(lambda q: _sdpa_loss(tg, F.scaled_dot_product_attention, q, m))(q)
    gq, gm = tg.grad(lambda q, m: (inner(q, m) ** 2).sum(), argnums=(0, 1))(tg.tensor(q0), tg.tensor(m0))
    qt, mt = torch.tensor(q0, requires_grad=True), torch.tensor(m0, requires_grad=True)
    g, = torch.autograd.grad(_sdpa_loss(torch, torch.nn.functional.scaled_dot_product_attention, qt, mt), [qt],
                             create_graph=True)
    hq, hm = torch.autograd.grad((g ** 2).sum(), [qt, mt])
    close(gq, hq, rtol=1e-9, atol=1e-9)
    close(gm, hm, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name, fn", [
    ("std of a constant row", lambda m, x: x.std(-1).sum()),
    ("norm of a zero vector", lambda m, x: x.norm(dim=-1).sum()),
    ("3-norm of a zero vector", lambda m, x: x.norm(3, dim=-1).sum() if m is tg else
     torch.linalg.vector_norm(x, 3, dim=-1).sum()),
    ("normalize a zero vector", lambda m, x: (F if m is tg else torch.nn.functional).normalize(x).sum()),
])
def test_no_nan_gradient_at_zero(name, fn):
    x0 = np.array([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0], [1.0, -2.0, 0.5]])
    x = tg.tensor(x0, requires_grad=True)
    fn(tg, x).backward()
    xt = torch.tensor(x0, requires_grad=True)
    fn(torch, xt).backward()
    assert np.isfinite(x.grad.numpy()).all(), name
    close(x.grad, xt.grad, rtol=1e-7)
