"""The gradient of a matmul operand shared across the batch ([1, M, K] @ [N, K, P], a convolution's
weight against its columns) is one product with the batch folded into the contraction."""
import numpy as np
import pytest

import tracegrad as tg


def _reference(x, w, g):
    """Gradients of sum(g * (x @ w)) with broadcasting undone by summing, in float64."""
    x, w, g = (a.astype(np.float64) for a in (x, w, g))
    dx = np.matmul(g, np.swapaxes(w, -1, -2)).sum(axis=0, keepdims=True) if x.shape[0] == 1 else g @ np.swapaxes(w, -1, -2)
    dw = np.matmul(np.swapaxes(x, -1, -2), g).sum(axis=0, keepdims=True) if w.shape[0] == 1 else np.swapaxes(x, -1, -2) @ g
    return dx, dw


@pytest.mark.parametrize("shx,shw", [((1, 5, 7), (6, 7, 3)), ((6, 5, 7), (1, 7, 3)), ((6, 5, 7), (6, 7, 3))])
@pytest.mark.parametrize("compiled", [False, True])
def test_shared_operand_gradients(shx, shw, compiled):
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=shx).astype(np.float32), rng.normal(size=shw).astype(np.float32)
    g = rng.normal(size=(6, 5, 3)).astype(np.float32)
    f = tg.grad(lambda a, c: ((a @ c) * tg.tensor(g)).sum(), argnums=(0, 1))
    dx, dw = (tg.compile(f) if compiled else f)(tg.tensor(x), tg.tensor(w))
    want_dx, want_dw = _reference(x, w, g)
    # NOTE: fp32 sums of 6 * 3 or 6 * 5 products in another order than the float64 reference
    np.testing.assert_allclose(dx.numpy(), want_dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw.numpy(), want_dw, rtol=1e-5, atol=1e-5)


def test_shared_weight_gradient_is_one_2d_product():
    x = tg.randn(1, 4, 9)
    f = tg.compile(tg.grad(lambda a, c: (a @ c).sum()))
    f(x, tg.randn(8, 9, 5))
    graph = f.graphs()["optimized"]
    mm = [n for n in graph.nodes if n.op == "matmul"]
    assert any(len(n.outputs[0].type.shape) == 2 for n in mm), [str(n.outputs[0].type) for n in mm]
