"""The eager fast path (`dispatch._fast_cpu`): a CPU primitive seen before with the same types runs
its cached numpy lambda directly; results, gradients and the checks of the full path stay the same."""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad import dispatch


def test_fast_path_is_taken_and_matches_the_full_path():
    a = tg.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    b = tg.tensor(np.full((2, 3), 0.5, np.float32))
    first = (a * b + 1.0).numpy()       # the full path, which caches the signature
    assert any(k[0] == "mul" for k in dispatch._EAGER_CPU)
    calls = []
    real = dispatch._fast_cpu
    dispatch._fast_cpu = lambda *args: calls.append(args[0]) or real(*args)
    try:
        again = (a * b + 1.0).numpy()
    finally:
        dispatch._fast_cpu = real
    assert "mul" in calls and "add" in calls
    np.testing.assert_array_equal(again, first)     # the same numpy calls on the same inputs
    np.testing.assert_array_equal(again, a.numpy() * 0.5 + 1.0)


def test_gradients_flow_through_the_fast_path():
    w = tg.tensor(np.array([1.0, -2.0, 3.0], np.float32), requires_grad=True)
    x = tg.tensor(np.array([0.5, 0.25, 2.0], np.float32))
    for _ in range(3):      # the later calls run on the fast path
        w.grad = None
        ((w * x).exp() * 2.0).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), 2.0 * x.numpy() * np.exp(w.numpy() * x.numpy()), rtol=1e-6)
    with tg.no_grad():
        y = w * x
    assert not y.requires_grad


def test_fast_path_keeps_the_nan_check(monkeypatch):
    x = tg.tensor(np.array([-1.0, 4.0], np.float32))
    with np.errstate(invalid="ignore"):
        x.sqrt(), x.sqrt()    # cached, and runs fast
        monkeypatch.setenv("TRACEGRAD_CHECK_NANS", "1")
        with pytest.raises(FloatingPointError, match="sqrt"):
            x.sqrt()


def test_a_traced_tensor_used_outside_its_step_still_raises():
    kept = []

    @tg.compile
    def step(x):
        y = x * 2.0
        kept.append(y)
        return y.sum()

    x = tg.randn(4)
    (x * 2.0).numpy(), (x * 2.0).numpy()     # the same signature, cached for the fast path
    step(x)
    with pytest.raises(tg.TracegradError, match="inside a compiled step"):
        kept[0] * 2.0


def test_backward_leaves_no_reference_cycles_behind():
    """Once backward() has freed the graph, dropping the step's tensors frees them by reference
    counting: no garbage collection (which walks every live object) is needed."""
    import gc
    import weakref
    w = tg.tensor(np.ones((4, 4), np.float32), requires_grad=True)
    gc.collect()
    gc.disable()
    try:
        h = (w * 2).tanh()
        alive = weakref.ref(h)
        loss = (h @ w).sum()
        loss.backward()
        del h, loss
        assert alive() is None
        assert gc.collect() == 0
    finally:
        gc.enable()
    with pytest.raises(Exception, match="second time"):
        y = (w * 3).sum()
        y.backward()
        y.backward()
