"""`tg.compile(..., donate=...)`: a donated argument's buffer may take the step's results (in-place
ufuncs on the numpy backend, dlogits over the logits in the Triton cross-entropy), and the tensor
cannot be used after the call."""
from __future__ import annotations

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.nn.functional as F
from tracegrad.errors import DonatedError


def _scaled_exp(x, w):
    return (x * w).exp()


def test_numpy_step_writes_into_a_donated_argument():
    xs, ws = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), np.float32(0.5) * np.ones(4, np.float32)
    kept = tg.compile(_scaled_exp, backend="numpy")
    given = tg.compile(_scaled_exp, backend="numpy", donate="x")
    want = kept(tg.tensor(xs), tg.tensor(ws)).numpy()
    x = tg.tensor(xs.copy())
    buffer = x._data
    got = given(x, tg.tensor(ws))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    assert "out=x" in given.ir("kernels") and "out=x" not in kept.ir("kernels")
    assert got.numpy() is buffer or np.shares_memory(got.numpy(), buffer)


def test_a_donated_tensor_cannot_be_used_after_the_call():
    step = tg.compile(_scaled_exp, backend="numpy", donate=(0,))
    x, w = tg.ones(2, 3), tg.ones(3)
    step(x, w)
    for use in (x.numpy, lambda: x + 1, lambda: step(x, w)):
        with pytest.raises(DonatedError, match=r"'x' was donated to _scaled_exp#0"):
            use()
    np.testing.assert_allclose(w.numpy(), 1.0)     # what was not donated is untouched


def test_a_donated_argument_the_step_updates_holds_the_update():
    @tg.compile(backend="numpy", donate="x")
    def bump(x):
        x.add_(1.0)
        return x * 2.0
    x = tg.zeros(4)
    np.testing.assert_allclose(bump(x).numpy(), 2.0)
    np.testing.assert_allclose(x.numpy(), 1.0)


def test_a_read_only_view_is_copied_not_written():
    step = tg.compile(lambda x: (x * 3.0).exp(), backend="numpy", donate=0)
    base = tg.tensor(np.arange(3, dtype=np.float32))
    x = base.expand(2, 3)          # a broadcast: read-only, overlapping
    np.testing.assert_allclose(step(x).numpy(), np.exp(3.0 * np.broadcast_to(np.arange(3), (2, 3))), rtol=1e-6)
    np.testing.assert_allclose(base.numpy(), np.arange(3))


def test_donate_must_name_an_argument():
    step = tg.compile(_scaled_exp, donate="logits")
    with pytest.raises(ValueError, match=r"names no argument.*\['logits'\].*\['x', 'w'\]"):
        step(tg.ones(2), tg.ones(2))


@pytest.mark.parametrize("donate", [(), ("logits",)])
def test_triton_cross_entropy_writes_dlogits_over_donated_logits(donate):
    pytest.importorskip("triton")
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((8, 37)).astype(np.float32), rng.integers(0, 37, (8,))

    def ce(logits, y):
        loss = F.cross_entropy(logits, y)
        loss.backward()
        return loss, logits.grad

    want_loss, want_grad = tg.compile(ce, backend="numpy")(tg.tensor(xs, requires_grad=True), tg.tensor(ys))
    step = tg.compile(ce, backend="triton", donate=donate)
    loss, grad = step(tg.tensor(xs.copy(), requires_grad=True), tg.tensor(ys))
    np.testing.assert_allclose(loss.numpy(), want_loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(grad.numpy(), want_grad.numpy(), rtol=1e-5, atol=1e-7)
    assert ("inplace=True" in step.ir("kernels")) == bool(donate), step.ir("kernels")
