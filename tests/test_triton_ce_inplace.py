"""The compiled Triton step writes the cross-entropy backward's dlogits over the logits buffer
when the logits die there, and allocates a fresh buffer when they are still used (CPU: interpreter)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("triton")
import tracegrad as tg  # noqa: E402
import tracegrad.nn.functional as F  # noqa: E402


def _run(backend, return_logits):
    rng = np.random.default_rng(0)
    xs, ws = rng.standard_normal((6, 5)).astype(np.float32), rng.standard_normal((5, 11)).astype(np.float32)
    ys = rng.integers(0, 11, (6,))
    x, w = tg.tensor(xs, requires_grad=True), tg.tensor(ws, requires_grad=True)

    @tg.compile(backend=backend)
    def step(x, w, y):
        logits = x @ w
        loss = F.cross_entropy(logits, y)
        loss.backward()
        return (loss, logits) if return_logits else loss
    out = step(x, w, tg.tensor(ys))
    outs = [o.numpy() for o in (out if return_logits else (out,))]
    return outs, x.grad.numpy(), w.grad.numpy(), step


def _source(step):
    return step.ir("kernels")


@pytest.mark.parametrize("return_logits", [False, True])
def test_cross_entropy_backward_in_place_only_when_logits_die(return_logits):
    want_outs, want_gx, want_gw, _ = _run("numpy", return_logits)
    got_outs, got_gx, got_gw, step = _run("triton", return_logits)
    for got, want in zip(got_outs, want_outs):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_gx, want_gx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_gw, want_gw, rtol=1e-5, atol=1e-6)
    src = _source(step)
    assert "cross_entropy_bwd" in src
    assert ("inplace=True" in src) is not return_logits, src
