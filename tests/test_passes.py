"""Graph passes: simplify (CSE, DCE, folding, rewrites), decompose, verify, memory planning,
the graph-level grad pass; Hypothesis generates broadcasting shapes and small random programs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tracegrad as tg
from tracegrad.codegen.numpy_program import generate
from tracegrad.ir import GraphBuilder, TensorType, VerifyError, verify
from tracegrad.ir.passes import cse, dce, decompose, grad, simplify
from tracegrad.ir.types import float32, float64


def _graph():
    b = GraphBuilder("f")
    x = b.input("x", TensorType((3, 4), float32))
    a = b.exp(x)
    a2 = b.exp(x)                  # CSE: same as a
    dead = b.cos(x)                # DCE: unused
    one = b.mul(b.add(a, a2), 1.0)   # x * 1 -> x
    y = b.sum(b.reshape(b.reshape(one, shape=(12,)), shape=(4, 3)), axes=(0, 1))
    return b.finish([y]), dead


def test_simplify_removes_duplicates_dead_code_and_identities():
    g, _ = _graph()
    s = simplify(g)
    ops = [n.op for n in s.nodes]
    assert ops.count("exp") == 1 and "cos" not in ops and "mul" not in ops
    assert ops.count("reshape") == 1
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(generate(s)(x)[0], generate(g)(x)[0], rtol=1e-6)


def test_cse_and_dce_keep_names_stable():
    g, _ = _graph()
    before = {v.name for v in g.values()}
    after = {v.name for v in dce(cse(g)).values()}
    assert after <= before


def test_decompose_keeps_the_composite_output_name():
    b = GraphBuilder("f")
    x = b.input("x", TensorType((2, 5), float32))
    y = b.softmax(x, axis=1)
    g = b.finish([y])
    d = decompose(g)
    assert d.outputs[0].name == y.name and all(n.op != "softmax" for n in d.nodes)
    verify(d)


def test_verify_catches_a_bad_graph():
    g, _ = _graph()
    broken = g.with_(nodes=g.nodes[1:])
    with pytest.raises(VerifyError, match="before it is defined"):
        verify(broken)


def test_check_env_verifies_every_pass(monkeypatch):
    monkeypatch.setenv("TRACEGRAD_CHECK", "1")
    step = tg.compile(lambda x: x.softmax(-1).sum(), backend="numpy")
    step(tg.ones(2, 3))
    assert [s.name for s in step.entries[0].stages.stages] == ["traced", "simplify", "decompose", "optimized"]


def test_graph_grad_pass_matches_eager_autograd():
    b = GraphBuilder("f")
    x = b.input("x", TensorType((3, 4), float64))
    w = b.input("w", TensorType((4,), float64))
    loss = b.sum(b.tanh(b.mul(x, w)), axes=(0, 1))
    g = grad(b.finish([loss]), wrt=[w])
    xv = np.random.default_rng(0).standard_normal((3, 4))
    wv = np.random.default_rng(1).standard_normal(4)
    _, dw = generate(g)(xv, wv)
    wt = tg.tensor(wv, requires_grad=True)
    (tg.tensor(xv) * wt).tanh().sum().backward()
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-12)


def test_memory_plan_reuses_dying_buffers():
    step = tg.compile(lambda x: ((x * 2).exp() + 1).tanh().sum(), backend="numpy")
    step(tg.ones(64, 64))
    prog = step.entries[0].program
    assert "out=" in prog.source and "del " in prog.source
    assert prog.plan.peak_bytes <= 2 * 64 * 64 * 4


# -- hypothesis ---------------------------------------------------------------------------------------
dims = st.integers(1, 4)


@st.composite
def broadcast_pair(draw):
    shape = draw(st.lists(dims, min_size=0, max_size=3))
    other = [draw(st.sampled_from([1, s])) for s in shape]
    cut = draw(st.integers(0, len(other)))
    return tuple(shape), tuple(other[cut:])


@settings(max_examples=60, deadline=None)
@given(broadcast_pair(), st.sampled_from(["add", "sub", "mul", "maximum"]))
def test_broadcasting_binary_ops_forward_and_backward(shapes, op):
    import torch
    r = np.random.default_rng(0)
    a, b = (r.standard_normal(s) for s in shapes)
    ta, tb = tg.tensor(a, requires_grad=True), tg.tensor(b, requires_grad=True)
    out = getattr(tg.ops, op)(ta, tb)
    out.sum().backward()
    pa, pb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    pout = getattr(torch, {"add": "add", "sub": "sub", "mul": "mul", "maximum": "maximum"}[op])(pa, pb)
    pout.sum().backward()
    np.testing.assert_allclose(out.numpy(), pout.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ta.grad.numpy(), pa.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(tb.grad.numpy(), pb.grad.numpy(), rtol=1e-12)


UNARY = ["exp", "tanh", "sin", "neg", "sigmoid"]
STEPS = st.lists(st.tuples(st.sampled_from(UNARY + ["add", "mul", "sum", "T", "max"]), st.integers(0, 9)),
                 min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(STEPS)
def test_random_programs_compile_to_the_eager_result(steps):
    def program(x, y):
        vals = [x, y]
        for op, k in steps:
            a, b = vals[k % len(vals)], vals[(k + 1) % len(vals)]
            if op in UNARY:
                v = getattr(a, op)()
            elif op == "T":
                v = a.transpose(0, 1) if a.ndim == 2 and a.shape[0] == a.shape[1] else a
            elif op in ("sum", "max"):
                v = getattr(a, "amax" if op == "max" else "sum")(-1, keepdim=True) if a.ndim else a
            else:
                v = getattr(a, "__add__" if op == "add" else "__mul__")(b) if a.shape == b.shape or \
                    a.ndim == 0 or b.ndim == 0 else a
            vals.append(v.tanh())   # keep values bounded
        return vals[-1]
    r = np.random.default_rng(1)
    x, y = (tg.tensor(r.standard_normal((3, 3)).astype(np.float32)) for _ in range(2))
    np.testing.assert_allclose(tg.compile(program)(x, y).numpy(), program(x, y).numpy(), rtol=1e-5, atol=1e-6)


def test_check_nans_names_the_first_bad_node(monkeypatch):
    from tracegrad.codegen.numpy_program import NaNError
    monkeypatch.setenv("TRACEGRAD_CHECK_NANS", "1")
    step = tg.compile(lambda x: (x.log() * 2).sum())
    with pytest.raises(NaNError, match="log at test_passes.py"):
        step(tg.tensor([1.0, -1.0]))


def test_the_backward_of_a_split_is_one_concat():
    rng = np.random.default_rng(0)
    xs, ws = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal((3, 12)).astype(np.float32)

    def f(x, w):
        q, k, v = (x @ w).split(4, -1)
        (q * k + v.exp()).sum().backward()
        return w.grad

    w = tg.tensor(ws, requires_grad=True)
    want = f(tg.tensor(xs), w).numpy()
    w.grad = None
    step = tg.compile(f)
    np.testing.assert_allclose(step(tg.tensor(xs), w).numpy(), want, rtol=1e-5, atol=1e-6)
    ops = [n.op for n in step.graphs()["optimized"].nodes]
    assert "concat" in ops and "pad" not in ops, ops


def _compiled_grad_equals_eager(f, arrays, backend="auto", rtol=1e-6, atol=0.0):
    """f returns the first argument's gradient: the compiled step's equals the eager one. The
    first array requires grad, the rest are plain tensors. Returns the step."""
    x, *rest = [tg.tensor(a, requires_grad=(k == 0)) for k, a in enumerate(arrays)]
    want = f(x, *rest).numpy()
    x.grad = None
    step = tg.compile(f, backend=backend)
    np.testing.assert_allclose(step(x, *rest).numpy(), want, rtol=rtol, atol=atol)
    return step


def test_the_backward_of_a_2d_slice_pads_once():
    """A 2-d slice's backward (a convolution tap's) pads once per axis; the two pads become one."""
    xs = np.random.default_rng(1).standard_normal((6, 9)).astype(np.float32)

    def f(x):
        (x[1:5, 2:8] ** 2).sum().backward()
        return x.grad

    step = _compiled_grad_equals_eager(f, [xs], rtol=1e-6)
    assert [n.op for n in step.graphs()["optimized"].nodes].count("pad") == 1


def test_a_convolutions_input_gradient_adds_its_taps_in_place():
    """On the numpy backend, `y + pad(x)` over y's dying buffer adds x into y's region: the tap
    gradients of a 3x3 convolution are summed without a padded copy each."""
    rng = np.random.default_rng(2)
    xs, ws = rng.standard_normal((2, 3, 8, 8)).astype(np.float32), rng.standard_normal((4, 3, 3, 3)).astype(np.float32)

    def f(x, w):
        (tg.nn.functional.conv2d(x, w, padding=1) ** 2).sum().backward()
        return x.grad

    step = _compiled_grad_equals_eager(f, [xs, ws], backend="numpy", rtol=1e-5, atol=1e-5)
    source = step.ir("kernels")
    assert source.count("] += ") >= 8 and source.count("pad(") <= 2, source


def test_adjacent_pads_that_also_pad_another_axis_become_one_concat():
    """Two slices side by side on one axis, both inside on another: their backward's pads differ on
    one axis only; the concat of the two has the slices' extent on the other axis, not the sum's."""
    xs = np.random.default_rng(3).standard_normal((2, 3, 2)).astype(np.float32)

    def f(x):         # the two slices cover the last axis: the concat is as wide as the result there
        (x[:, 1:2, 0:1].exp() + x[:, 1:2, 1:2] ** 2).sum().backward()
        return x.grad

    step = _compiled_grad_equals_eager(f, [xs], rtol=1e-6)
    ops = [n.op for n in step.graphs()["optimized"].nodes]
    assert "concat" in ops and ops.count("pad") == 1, ops


def test_a_linear_layers_weight_gradient_is_made_in_the_weights_layout():
    """dW of y = x @ W^T comes out of autodiff as transpose(x^T @ dy); it is made as dy^T @ x, so
    no permute reads a matmul's result (its readers would load it with a stride)."""
    rng = np.random.default_rng(0)
    lin = tg.nn.Linear(6, 4)

    def f(x):
        (lin(x).tanh() * 2).sum().backward()
        return lin.weight.grad
    x = tg.tensor(rng.standard_normal((5, 6)).astype(np.float32))
    want = f(x).numpy()
    lin.weight.grad = None
    step = tg.compile(f)
    # NOTE: the product's summation order changes with its operands' order: not bit for bit
    np.testing.assert_allclose(step(x).numpy(), want, rtol=1e-5, atol=1e-6)
    g = step.graphs()["optimized"]
    made = {o for n in g.nodes if n.op == "matmul" for o in n.outputs}
    assert not [n for n in g.nodes if n.op == "permute" and n.inputs[0] in made], format(g)


def test_a_transposed_product_that_is_also_read_as_it_is_stays_one_product():
    b = GraphBuilder("f")
    x, w = b.input("x", TensorType((3, 4), float32)), b.input("w", TensorType((4, 5), float32))
    m = b.matmul(x, w)
    g = b.finish([b.permute(m, dims=(1, 0)), b.exp(m)])
    s = simplify(g)
    assert [n.op for n in s.nodes].count("matmul") == 1
    rng = np.random.default_rng(1)
    xs, ws = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((4, 5)).astype(np.float32)
    for got, want in zip(generate(s)(xs, ws), generate(g)(xs, ws)):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_a_product_made_transposed_stays_where_the_product_was():
    """The transpose may be read much later than the product is made (a tied embedding's gradient
    waits for the embedding's backward); made there, the product would keep its operands (the
    logits' gradient) alive until then."""
    b = GraphBuilder("f")
    x, w = b.input("x", TensorType((3, 4), float32)), b.input("w", TensorType((4, 5), float32))
    m = b.matmul(x, w)
    late = b.exp(b.exp(b.exp(x)))
    g = b.finish([b.add(b.permute(m, dims=(1, 0)), 1.0), late])
    s = simplify(g)
    ops = [n.op for n in s.nodes]
    assert ops.index("matmul") < ops.index("exp") and "permute" not in ops[ops.index("matmul"):], ops
    rng = np.random.default_rng(2)
    xs, ws = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((4, 5)).astype(np.float32)
    for got, want in zip(generate(s)(xs, ws), generate(g)(xs, ws)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
