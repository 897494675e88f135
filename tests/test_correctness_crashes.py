"""Valid PyTorch programs that once crashed or were refused, now checked against PyTorch CPU:
constants from iota in compiled numpy programs, PyTorch's looser shape rules for scatter_add and
gather, mixed-dtype norms and losses, zero-size edge cases, the gradient of a mean all-reduce,
and JAX's zero gradient of a function that ignores its argument."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tracegrad as tg
import tracegrad.nn.functional as F
from tracegrad.models import GPT, GPTConfig

from torch_compare import close

IOTA_PROGRAMS = {
    "linspace": (lambda m, x: x * m.linspace(-1, 1, 3), (2, 3)),
    "float arange": (lambda m, x: x * m.arange(0.0, 1.5, 0.5), (2, 3)),
    "tril of one row": (lambda m, x: (x * 2).tril() * 3, (1, 3)),
    "triu of one row": (lambda m, x: (x * 2).triu(1) + 1, (1, 3)),
}


@pytest.mark.parametrize("name", sorted(IOTA_PROGRAMS))
def test_compiled_numpy_constants_are_writable(name):
    fn, shape = IOTA_PROGRAMS[name]
    close(tg.compile(lambda x: fn(tg, x), backend="numpy")(tg.ones(*shape)), fn(torch, torch.ones(*shape)))


def test_gpt_with_dropout_on_one_token():
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8, dropout=0.1))

    @tg.compile
    def step(x, y):
        _, loss = model(x, y)
        loss.backward()
        return loss

    assert np.isfinite(step(tg.tensor([[1]]), tg.tensor([[2]])).item())


def test_scatter_add_with_a_smaller_index():
    idx, src = [[0, 1]], np.ones((2, 3))
    close(tg.zeros(3, 4, dtype=tg.float64).scatter_add(1, tg.tensor(idx), tg.tensor(src)),
          torch.zeros(3, 4, dtype=torch.float64).scatter_add(1, torch.tensor(idx), torch.tensor(src)))


def test_gather_with_a_smaller_index_and_its_gradient():
    x0 = np.arange(12.0).reshape(3, 4)
    x, xt = tg.tensor(x0, requires_grad=True), torch.tensor(x0, requires_grad=True)
    y, yt = x.gather(0, tg.tensor([[2, 1]])), xt.gather(0, torch.tensor([[2, 1]]))
    close(y, yt)
    (y * y).sum().backward()
    (yt * yt).sum().backward()
    close(x.grad, xt.grad)


def test_scatter_add_errors_name_scatter_add():
    with pytest.raises(tg.ShapeError, match="scatter_add"):
        tg.zeros(3, 4).scatter_add(1, tg.zeros(4, 1, dtype=tg.long), tg.ones(4, 1))


def test_rms_norm_with_a_float64_weight():
    x0, w0 = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32), np.array([1.0, 2.0, 0.5])
    out = F.rms_norm(tg.tensor(x0), (3,), tg.tensor(w0))
    ref = torch.nn.functional.rms_norm(torch.tensor(x0), (3,), torch.tensor(w0))
    assert out.dtype == tg.float32 and ref.dtype == torch.float32
    close(out, ref, rtol=1e-6)


def test_dtype_promotion_of_scalars_and_losses():
    assert tg.tensor(np.float64(1.5)).dtype == tg.float64
    assert F.mse_loss(tg.ones(2), tg.ones(2, dtype=tg.float64)).dtype == tg.float64


def test_from_numpy_shares_memory():
    a = np.zeros(3, np.float32)
    t = tg.from_numpy(a)
    a[0] = 5
    assert t.numpy()[0] == 5


@pytest.mark.parametrize("fn", [
    lambda m, x: x.softmax(-1), lambda m, x: x.log_softmax(-1), lambda m, x: x.sum(-1),
])
def test_zero_size_reductions(fn):
    assert tuple(fn(tg, tg.zeros(2, 0)).shape) == tuple(fn(torch, torch.zeros(2, 0)).shape)


def test_flatten_of_a_zero_size_tensor():
    assert tuple(tg.zeros(0, 1, 0).flatten(0, 0).shape) == tuple(torch.zeros(0, 1, 0).flatten(0, 0).shape)
    assert tuple(tg.zeros(2, 0, 3).flatten(1).shape) == (2, 0)


def test_all_reduce_mean_has_a_gradient():
    from tracegrad.codegen.numpy_program import generate
    from tracegrad.ir import GraphBuilder, TensorType
    from tracegrad.ir.passes.autodiff import grad
    from tracegrad.ir.types import float32

    b = GraphBuilder("g")
    x = b.input("x", TensorType((2,), float32))
    y = b.sum(b.all_reduce(b.mul(x, x), op="mean", group=(0, 1)), axes=(0,))
    g = grad(b.finish([y]))

    def rank_main(rank):
        return generate(g, tg.distributed.current_comm())(np.array([1.0, 2.0], np.float32) * (rank + 1))

    # y = mean over ranks of sum(x_r^2); one logical loss, so dy/dx_r = 2 x_r / 2
    for rank, (value, dx) in enumerate(tg.distributed.run_local(rank_main, 2)):
        np.testing.assert_allclose(value, (1 + 4) * (1 + 4) / 2)
        np.testing.assert_allclose(dx, np.array([1.0, 2.0]) * (rank + 1))


def test_grad_of_a_function_that_ignores_its_argument_is_zero():
    np.testing.assert_array_equal(tg.grad(lambda x: tg.ones(3).sum())(tg.ones(3)).numpy(), np.zeros(3))
    # so grad of grad of a linear function is zero
    assert tg.grad(tg.grad(lambda x: (x * 2).sum()))(tg.ones(())).item() == 0.0
