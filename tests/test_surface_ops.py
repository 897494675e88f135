"""The tensor functions PyTorch scripts reach for, against PyTorch CPU: values and gradients,
eagerly and (where traceable) in a compiled step."""
import numpy as np
import pytest
import torch

import tracegrad as tg
from tests.torch_compare import close

# NOTE: composites (scans, pairwise products, einsum via matmul) sum in a different order than
# PyTorch's kernels, so float32 results agree to rounding, not bit for bit.
RTOL, ATOL = 1e-5, 1e-5


def _pair(shape, seed=0, positive=False):
    a = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    if positive:
        a = np.abs(a) + 0.5
    return tg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)


CASES = {
    "cumsum": (lambda x: x.cumsum(1), lambda x: x.cumsum(1)),
    "cumsum0": (lambda x: tg.cumsum(x, 0), lambda x: torch.cumsum(x, 0)),
    "cumprod": (lambda x: x.cumprod(-1), lambda x: x.cumprod(-1)),
    "prod": (lambda x: x.prod(1), lambda x: x.prod(1)),
    "prod_all": (lambda x: x.prod(), lambda x: x.prod()),
    "flip": (lambda x: x.flip(0, 1), lambda x: x.flip(0, 1)),
    "roll": (lambda x: x.roll(2, 1), lambda x: x.roll(2, 1)),
    "roll_flat": (lambda x: tg.roll(x, -3), lambda x: torch.roll(x, -3)),
    "repeat_interleave": (lambda x: x.repeat_interleave(3, dim=0), lambda x: x.repeat_interleave(3, dim=0)),
    "repeat_interleave_flat": (lambda x: x.repeat_interleave(2), lambda x: x.repeat_interleave(2)),
    "sort": (lambda x: x.sort(1).values, lambda x: x.sort(1).values),
    "sort_desc": (lambda x: tg.sort(x, 0, descending=True)[0], lambda x: torch.sort(x, 0, descending=True)[0]),
    "einsum": (lambda x: tg.einsum("ij,kj->ik", x, x), lambda x: torch.einsum("ij,kj->ik", x, x)),
    "mm": (lambda x: tg.mm(x, x.T), lambda x: torch.mm(x, x.T)),
    "bmm": (lambda x: tg.bmm(x.reshape(2, 2, 5), x.reshape(2, 5, 2)),
            lambda x: torch.bmm(x.reshape(2, 2, 5), x.reshape(2, 5, 2))),
    "scatter": (lambda x: x.scatter(1, tg.tensor([[0, 2], [1, 3], [4, 0], [2, 1]]), x[:, :2] * 3),
                lambda x: x.scatter(1, torch.tensor([[0, 2], [1, 3], [4, 0], [2, 1]]), x[:, :2] * 3)),
    "index_put_acc": (lambda x: x.index_put((tg.tensor([0, 3, 0]), tg.tensor([1, 4, 1])), tg.tensor([1., 2., 3.]),
                                            accumulate=True) * x,
                      lambda x: x.index_put((torch.tensor([0, 3, 0]), torch.tensor([1, 4, 1])),
                                            torch.tensor([1., 2., 3.]), accumulate=True) * x),
    "round": (lambda x: (x * 3).round() + x, lambda x: (x * 3).round() + x),
    "ceil": (lambda x: (x * 3).ceil() + x, lambda x: (x * 3).ceil() + x),
    "ge_le": (lambda x: x.ge(0.1).float() + x.le(-0.2).float() * x, lambda x: x.ge(0.1).float() + x.le(-0.2).float() * x),
    "log1p": (lambda x: x.abs().log1p(), lambda x: x.abs().log1p()),
    "softplus": (lambda x: tg.nn.functional.softplus(x * 10, beta=2), lambda x: torch.nn.functional.softplus(x * 10, beta=2)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_value_and_grad_match_torch(name):
    ours, theirs = CASES[name]
    x, xt = _pair((4, 5))
    y, yt = ours(x), theirs(xt)
    close(y, yt, RTOL, ATOL)
    w = np.random.default_rng(1).standard_normal(tuple(yt.shape)).astype(np.float32)
    (y * tg.tensor(w)).sum().backward()
    (yt * torch.tensor(w)).sum().backward()
    close(x.grad, xt.grad, RTOL, ATOL)


@pytest.mark.parametrize("name", ["cumsum", "prod", "flip", "roll", "repeat_interleave", "sort", "sort_desc", "einsum",
                                  "scatter", "index_put_acc", "round"])
def test_compiled_matches_eager(name):
    ours, _ = CASES[name]
    x, _ = _pair((4, 5))
    w = tg.randn(4, 5)

    @tg.compile
    def step(x, w):
        y = ours(x)
        loss = (y * y).sum()
        loss.backward()
        return loss

    xe = x.detach().requires_grad_()
    le = (ours(xe) * ours(xe)).sum()
    le.backward()
    lc = step(x, w)
    close(lc, le.numpy(), RTOL, ATOL)
    close(x.grad, xe.grad, RTOL, ATOL)


def test_int_scans_and_search():
    a = np.array([[3, 1, 2, 1], [0, 5, -1, 5]])
    assert tg.tensor(a).cumsum(1).tolist() == torch.tensor(a).cumsum(1).tolist()
    assert tg.tensor(a).cumsum(1).dtype == tg.int64
    s, st = tg.tensor(a).sort(1, stable=True), torch.tensor(a).sort(dim=1, stable=True)
    assert s.indices.tolist() == st.indices.tolist() and type(s).__name__ == "sort"
    assert tg.tensor(a).argsort(1, descending=True).tolist() == \
        torch.tensor(a).argsort(dim=1, descending=True, stable=True).tolist()
    assert tg.tensor(a).nonzero().tolist() == torch.tensor(a).nonzero().tolist()
    assert [t.tolist() for t in tg.tensor(a).nonzero(as_tuple=True)] == \
        [t.tolist() for t in torch.tensor(a).nonzero(as_tuple=True)]
    u, inv, cnt = tg.unique(tg.tensor(a), return_inverse=True, return_counts=True)
    ut, invt, cntt = torch.unique(torch.tensor(a), return_inverse=True, return_counts=True)
    assert (u.tolist(), inv.tolist(), cnt.tolist()) == (ut.tolist(), invt.tolist(), cntt.tolist())
    assert tg.tensor(a).prod(1).tolist() == torch.tensor(a).prod(1).tolist()
    rep = tg.tensor([1, 2, 3]).repeat_interleave(tg.tensor([2, 0, 1]))
    assert rep.tolist() == torch.tensor([1, 2, 3]).repeat_interleave(torch.tensor([2, 0, 1])).tolist()


def test_nonzero_in_a_step_is_a_clear_error():
    @tg.compile
    def step(x):
        return x.nonzero()

    with pytest.raises(tg.DataDependentError, match="nonzero"):
        step(tg.ones(3))


def test_round_half_even_and_close():
    v = [0.5, 1.5, 2.5, -0.5, -2.5, 1.25, 2.675]
    assert tg.tensor(v).round().tolist() == torch.tensor(v).round().tolist()
    close(tg.tensor(v).round(decimals=1), torch.tensor(v).round(decimals=1), 1e-6, 1e-6)
    a, b = tg.tensor([1.0, 2.0, float("nan")]), tg.tensor([1.0 + 1e-7, 2.1, float("nan")])
    at, bt = torch.tensor([1.0, 2.0, float("nan")]), torch.tensor([1.0 + 1e-7, 2.1, float("nan")])
    assert tg.isclose(a, b).tolist() == torch.isclose(at, bt).tolist()
    assert tg.isclose(a, b, equal_nan=True).tolist() == torch.isclose(at, bt, equal_nan=True).tolist()
    assert tg.allclose(a[:1], b[:1]) and not tg.allclose(a, b)


def test_einsum_forms():
    rng = np.random.default_rng(0)
    ops = {"bhqd,bhkd->bhqk": [(2, 3, 4, 5), (2, 3, 6, 5)], "ij->ji": [(3, 4)], "ii->": None,
           "i,j->ij": [(3,), (4,)], "ijk,kl,lm->im": [(2, 3, 4), (4, 5), (5, 6)], "ij->": [(3, 4)]}
    for eq, shapes in ops.items():
        if shapes is None:
            with pytest.raises(NotImplementedError, match="diagonal"):
                tg.einsum(eq, tg.ones(3, 3))
            continue
        arrs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        close(tg.einsum(eq, *[tg.tensor(a) for a in arrs]), torch.einsum(eq, *[torch.tensor(a) for a in arrs]),
              1e-5, 1e-5)


def test_autograd_function_eager_and_traced():
    class Clip(tg.autograd.Function):       # a straight-through estimator: forward clips, backward passes
        @staticmethod
        def forward(ctx, x, lo):
            ctx.save_for_backward(x)
            ctx.lo = lo
            return x.clamp(min=lo)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 2.0, None

    x = tg.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    Clip.apply(x, 0.0).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0, 2.0]
    for backend in ("numpy", "cpu"):       # NOTE: "cpu" names its kernels after the Function's backward
        w = tg.tensor([-1.0, 0.5, 2.0], requires_grad=True)

        def step(a):
            loss = (Clip.apply(w, 0.0) * a).sum()
            loss.backward()
            return loss

        assert tg.compile(step, backend=backend)(tg.ones(3)).item() == 2.5
        assert w.grad.tolist() == [2.0, 2.0, 2.0]


def test_misc_functions():
    tg.manual_seed(0)
    z = tg.normal(2.0, 0.5, size=(20000,))
    assert abs(z.numpy().mean() - 2.0) < 0.02 and abs(z.numpy().std() - 0.5) < 0.02
    assert tg.normal(tg.zeros(3), tg.ones(3)).shape == (3,)
    with tg.inference_mode():
        y = tg.ones(2, requires_grad=True) * 2
    assert not y.requires_grad

    @tg.inference_mode()
    def f(x):
        return x * 2
    assert not f(tg.ones(2, requires_grad=True)).requires_grad
    tg.set_num_threads(1)
    assert tg.get_num_threads() == 1
    tg.testing.assert_close(tg.ones(3), tg.ones(3) + 1e-7)
    with pytest.raises(AssertionError, match="not close"):
        tg.testing.assert_close(tg.ones(3), tg.ones(3) + 1e-3)
    x = tg.randn(3, 4)
    assert x.stride() == (4, 1) and x.is_contiguous()
