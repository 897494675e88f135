"""tg.compile: dumps, caching and retracing, state write-back, errors, and compiled == eager."""
from __future__ import annotations

import logging
import re
import warnings

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.ir.printer import load


def _data(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# -- the dump -----------------------------------------------------------------------------------
def loss_fn(x, w, b):
    return (x @ w + b).tanh().sum()


GOLDEN = """\
# tracegrad IR | loss_fn#0 | stage 0: traced (<ms>) | 4 ops
def loss_fn(x: f32[4, 8], w: f32[8, 16], b: f32[16]) -> f32[]:
    # test_compile.py:<line>  loss_fn  return (x @ w + b).tanh().sum()
    t0: f32[4, 16] = ops.matmul(x, w)
    t1: f32[4, 16] = ops.add(t0, b)
    t2: f32[4, 16] = ops.tanh(t1)
    t3: f32[] = ops.sum(t2, axes=(0, 1), keepdim=False)
    return t3"""


def test_golden_dump_of_a_tiny_graph():
    step = tg.compile(loss_fn)
    step(tg.tensor(_data(4, 8)), tg.tensor(_data(8, 16)), tg.tensor(_data(16)))
    text = step.ir("traced")
    text = re.sub(r"\(\d+\.\d ms\)", "(<ms>)", text)
    text = re.sub(r"test_compile\.py:\d+", "test_compile.py:<line>", text)
    assert text == GOLDEN


def test_dump_is_runnable_python():
    x, w, b = (tg.tensor(a) for a in (_data(4, 8), _data(8, 16), _data(16)))
    step = tg.compile(loss_fn)
    want = step(x, w, b)
    got = load(step.ir("optimized"), tg.ops)["loss_fn"](x, w, b)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_backward_dump_lists_saved_tensors_and_vjp_rules():
    w = tg.tensor(_data(8, 16), requires_grad=True)

    @tg.compile
    def step(x):
        loss = (x @ w).tanh().sum()
        loss.backward()
        return loss
    step(tg.tensor(_data(4, 8)))
    text = step.ir("backward")
    assert "# saved for backward:" in text and "bytes)" in text
    assert "# vjp(matmul)" in text and "# vjp(tanh)" in text
    assert "stage: forward" in step.ir("forward")
    assert "def step(" in step.ir("kernels") and "np.matmul" in step.ir("kernels")


def test_networkx_and_dot_export():
    step = tg.compile(loss_fn)
    step(tg.tensor(_data(4, 8)), tg.tensor(_data(8, 16)), tg.tensor(_data(16)))
    g = tg.last_graphs(step)["optimized"]
    nxg = g.to_networkx()
    import networkx as nx
    assert nx.is_directed_acyclic_graph(nxg) and nxg.number_of_nodes() == len(g.nodes) + 4
    assert g.to_dot().startswith('digraph "loss_fn"')


# -- compiled == eager on a training step ------------------------------------------------------------
class MLP:
    def __init__(self, seed=0):
        r = np.random.default_rng(seed)
        self.params = [tg.tensor(r.standard_normal(s).astype(np.float32) * 0.3, requires_grad=True)
                       for s in ((6, 16), (16,), (16, 3), (3,))]

    def loss(self, x, y):
        w1, b1, w2, b2 = self.params
        h = (x @ w1 + b1).relu()
        logits = h @ w2 + b2
        return tg.ops.cross_entropy(logits, y)[0]


def _sgd_step(model, x, y, lr=0.1):
    loss = model.loss(x, y)
    loss.backward()
    with tg.no_grad():
        for p in model.params:
            p -= lr * p.grad
            p.grad = None
    return loss


def test_compiled_mlp_training_equals_eager():
    r = np.random.default_rng(1)
    batches = [(tg.tensor(r.standard_normal((8, 6)).astype(np.float32)), tg.tensor(r.integers(0, 3, 8)))
               for _ in range(6)]
    eager, compiled = MLP(), MLP()
    step = tg.compile(lambda x, y: _sgd_step(compiled, x, y))
    for x, y in batches:
        le = _sgd_step(eager, x, y)
        lc = step(x, y)
        np.testing.assert_allclose(lc.numpy(), le.numpy(), rtol=1e-5)
    for pe, pc in zip(eager.params, compiled.params):
        np.testing.assert_allclose(pc.numpy(), pe.numpy(), rtol=1e-5, atol=1e-7)
        assert pc.grad is None
    assert len(step.entries) == 1


def test_gradient_accumulation_across_calls_matches_eager():
    w_e = tg.tensor(_data(5, 2), requires_grad=True)
    w_c = tg.tensor(_data(5, 2), requires_grad=True)
    xs = [tg.tensor(_data(3, 5, seed=s)) for s in range(3)]
    step = tg.compile(lambda x: (x @ w_c).square().mean().backward())
    for x in xs:
        (x @ w_e).square().mean().backward()
        step(x)
    np.testing.assert_allclose(w_c.grad.numpy(), w_e.grad.numpy(), rtol=1e-5)
    assert len(step.entries) == 2   # p.grad None on the first call, set on the others


# -- caching, retracing ---------------------------------------------------------------------------
def test_new_shape_retraces_and_logs_reason(caplog):
    step = tg.compile(lambda x: (x * 2).sum())
    caplog.set_level(logging.INFO, logger="tracegrad.recompiles")
    step(tg.ones(2, 3))
    step(tg.ones(2, 3))
    step(tg.ones(4, 3))
    assert len(step.entries) == 2
    assert "f32[2, 3] -> tensor f32[4, 3]" in caplog.text


def test_python_scalars_are_part_of_the_signature():
    step = tg.compile(lambda x, k: x * k)
    assert step(tg.ones(2), 3).numpy().tolist() == [3.0, 3.0]
    assert step(tg.ones(2), 5).numpy().tolist() == [5.0, 5.0]
    assert len(step.entries) == 2


def test_many_retraces_warn_with_reasons():
    step = tg.compile(lambda x: x + 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in range(1, 12):
            step(tg.ones(n))
    assert any("traced" in str(w.message) and "->" in str(w.message) for w in caught)


# -- errors ------------------------------------------------------------------------------------------
def test_branching_on_a_traced_value_raises_naming_the_line():
    @tg.compile
    def step(x):
        if x.sum() > 0:   # data-dependent: not allowed
            return x
        return -x
    with pytest.raises(tg.DataDependentError) as e:
        step(tg.ones(3))
    msg = str(e.value)
    assert "test_compile.py" in msg and "if x.sum() > 0" in msg and "tg.where" in msg


@pytest.mark.parametrize("what", ["item", "int", "numpy"])
def test_concrete_values_inside_a_step_raise(what):
    fns = {"item": lambda x: x.sum().item(), "int": lambda x: int(x.sum()), "numpy": lambda x: x.numpy()}
    with pytest.raises(tg.DataDependentError):
        tg.compile(fns[what])(tg.ones(3))


def test_shape_mismatch_names_op_shapes_and_line():
    with pytest.raises(tg.ShapeError) as e:
        tg.ones(2, 3) @ tg.ones(4, 5)
    msg = str(e.value)
    assert "matmul" in msg and "f32[2, 3]" in msg and "f32[4, 5]" in msg and "test_compile.py" in msg


def test_unsupported_names_and_dtypes_say_so():
    with pytest.raises(AttributeError, match="not part of the PyTorch subset"):
        tg.fft   # noqa: B018
    with pytest.raises(TypeError, match="unsupported dtype"):
        tg.zeros(2, dtype="complex64")


# -- functional transforms -------------------------------------------------------------------------
def test_grad_and_value_and_grad():
    f = lambda x: (x ** 3).sum()
    x = tg.tensor([1.0, 2.0, -1.0])
    np.testing.assert_allclose(tg.grad(f)(x).numpy(), 3 * x.numpy() ** 2, rtol=1e-6)
    v, g = tg.value_and_grad(lambda a, b: (a * b).sum(), argnums=(0, 1))(x, x * 2)
    assert v.item() == pytest.approx(12.0)
    np.testing.assert_allclose(g[1].numpy(), x.numpy())


def test_grad_of_grad():
    d1 = tg.grad(lambda x: (x.sin() * x).sum())
    d2 = tg.grad(lambda x: d1(x).sum())   # elementwise f, so this is f'' at each point
    x = tg.tensor([0.3, -1.2, 2.0], dtype=tg.float64)
    want = 2 * np.cos(x.numpy()) - x.numpy() * np.sin(x.numpy())
    np.testing.assert_allclose(d2(x).numpy(), want, rtol=1e-10)


def test_grad_inside_compile_equals_eager():
    f = lambda x: (x.tanh() * x).sum()
    x = tg.tensor(_data(4))
    np.testing.assert_allclose(tg.compile(tg.grad(f))(x).numpy(), tg.grad(f)(x).numpy(), rtol=1e-6)


# -- indexing ------------------------------------------------------------------------------------------
def test_indexing_and_index_assignment_match_numpy():
    a = _data(4, 5)
    t = tg.tensor(a)
    np.testing.assert_array_equal(t[1:3, ::2].numpy(), a[1:3, ::2])
    np.testing.assert_array_equal(t[None, -1, [0, 2]].numpy(), a[None, -1, [0, 2]])
    np.testing.assert_array_equal(t[[0, 3], [1, 2]].numpy(), a[[0, 3], [1, 2]])
    np.testing.assert_array_equal(t[t > 0].numpy(), a[a > 0])
    t[t > 0] = 0.0
    b = a.copy()
    b[b > 0] = 0.0
    np.testing.assert_array_equal(t.numpy(), b)
    t[1:3, ::2] = 7.0
    b[1:3, ::2] = 7.0
    np.testing.assert_array_equal(t.numpy(), b)


def test_index_assignment_inside_a_step():
    @tg.compile
    def clip_negative(x):
        y = x * 1
        y[y < 0] = 0.0
        y[:, 0] = 1.0
        return y
    a = _data(3, 4)
    b = np.maximum(a, 0)
    b[:, 0] = 1
    np.testing.assert_array_equal(clip_negative(tg.tensor(a)).numpy(), b)


# -- options -------------------------------------------------------------------------------------------
def test_compile_options_are_checked():
    with pytest.raises(ValueError, match="backend must be"):
        tg.compile(lambda x: x, backend="tvm")
    with pytest.raises(TypeError, match="donate_argnums"):
        tg.compile(lambda x: x, donate_argnums=(0,))     # a misspelt option is not silently dropped
    with pytest.raises(TypeError, match="mesh must be a tg.Mesh"):
        tg.compile(lambda x: x, mesh=object())
    with pytest.raises(ValueError, match="schedule must be one of"):
        tg.compile(lambda x: x, mesh=tg.Mesh(pp=2), schedule="interleaved")
    with pytest.raises(ValueError, match="style 'diagonal'"):
        tg.compile(lambda x: x, mesh=tg.Mesh(tp=2), plan={"fc1": "diagonal"})


def test_an_integer_division_written_over_its_dying_input_stays_an_integer_division():
    """The numpy program writes a ufunc's result over a dying input's buffer (`out=`); for integers
    a division floors there as it does elsewhere (np.divide would make floats an int64 buffer refuses)."""
    n = np.arange(-20, 20, dtype=np.int64)
    got = tg.compile(lambda n: (n * 3) // 4, backend="numpy")(tg.tensor(n)).numpy()
    np.testing.assert_array_equal(got, (n * 3) // 4)
    assert got.dtype == np.int64
