"""The fusion pass: kernel counts for the patterns that matter (softmax, norms, MLP epilogue,
cross-entropy, the optimizer update), the log that explains refused pairs, and invariants (no
cycles, no recomputed matmul, the fused graph computes what the unfused one does).

Repro one: python -m pytest tests/test_fusion.py -k layer_norm
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.nn.functional as F
from tracegrad.codegen import numpy_program
from tracegrad.ir.passes import decompose, simplify
from tracegrad.ir.passes.fusion import fuse, format_fused
from tracegrad.ir.passes.fusion_index import Expr, Sym, linearize, unflatten

# masked-off lanes of interpreted kernels may compute inf * 0; their results are never stored
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def fused(fn, *args):
    """The fused graph of `fn` compiled for Triton (run once on the CPU, under the interpreter)."""
    step = tg.compile(fn, backend="triton")
    step(*args)
    return step.graphs()["fused"], step


def launches(g) -> list[str]:
    """What each launch of a fused graph is: a kernel's kind, or the extern op."""
    out = []
    for n in g.nodes:
        if n.op == "kernel":
            out.append(n.attrs["kind"])
        elif n.op in ("matmul", "cross_entropy", "cross_entropy_bwd", "scaled_dot_product_attention",
                      "scaled_dot_product_attention_bwd", "index_add", "scatter_add"):
            out.append(n.op)
    return out


def rnd(*shape, grad=False, seed=0):
    return tg.tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), requires_grad=grad)


# -- kernel counts ------------------------------------------------------------------------------------
def test_softmax_is_one_kernel():
    g, _ = fused(lambda x: x.softmax(-1), rnd(8, 32))
    assert launches(g) == ["reduction"]


def test_softmax_forward_and_backward_is_one_kernel():
    x = rnd(8, 32, grad=True)

    def step(x):
        (x.softmax(-1) * rnd(8, 32, seed=1)).sum().backward()
        return x.grad
    g, _ = fused(step, x)
    assert launches(g) == ["reduction"]


def test_layer_norm_is_one_kernel_and_its_backward_two():
    x, w, b = rnd(2, 3, 32, grad=True), rnd(32, grad=True), rnd(32, grad=True)
    g, _ = fused(lambda x, w, b: F.layer_norm(x, (32,), w, b), x, w, b)
    assert launches(g) == ["reduction"]

    def step(x, w, b):
        (F.layer_norm(x, (32,), w, b) * rnd(2, 3, 32, seed=1)).sum().backward()
        return x.grad, w.grad, b.grad
    g, _ = fused(step, x, w, b)
    # rows: forward + dx; columns: dw and db together
    assert launches(g) == ["reduction", "reduction"]


def test_a_bf16_gradient_into_a_layer_norm_is_not_stored_widened():
    """Under autocast the gradient reaching a norm is bf16. Cast to fp32 and scaled by the weight,
    it is read by the row kernel (dx) and the column kernel (dw, db): each recomputes it from the
    bf16 buffer, and dy * x-hat goes into the column kernel. The fp32 [rows, C] results the
    backward's kernels store are dx and x-hat (recomputed by the row kernel for the column one)."""
    x, w, b = rnd(1024, 32, grad=True), rnd(32, grad=True), rnd(32, grad=True)
    lin = tg.nn.Linear(32, 16)

    def step(x, w, b):
        with tg.autocast(tg.bfloat16):
            y = lin(F.layer_norm(x, (32,), w, b))
        y.float().square().sum().backward()
        return x.grad, w.grad, b.grad
    g, _ = fused(step, x, w, b)
    wide = [v.name for n in g.nodes if n.op == "kernel" and n.phase == "backward" for v in n.outputs
            if v.type.shape == (1024, 32) and v.type.dtype == tg.float32]
    assert len(wide) == 2, format_fused(g)


def test_rms_norm_is_one_kernel():
    g, _ = fused(lambda x, w: F.rms_norm(x, (32,), w), rnd(8, 32), rnd(32))
    assert launches(g) == ["reduction"]


def test_rms_norm_backward_is_a_row_kernel_and_a_column_kernel():
    x, w = rnd(6, 32, grad=True), rnd(32, grad=True)

    def step(x, w):
        (F.rms_norm(x, (32,), w) * rnd(6, 32, seed=2)).sum().backward()
        return x.grad, w.grad
    g, _ = fused(step, x, w)
    assert launches(g) == ["reduction", "reduction"]


def test_gelu_mlp_epilogues():
    x, w1, b1, w2, b2 = rnd(2, 8, 32), rnd(64, 32), rnd(64), rnd(32, 64), rnd(32)
    # GPT-2's GELU (tanh form): each matmul takes its epilogue in the template, one launch per linear
    g, step = fused(lambda x: x + F.linear(F.gelu(F.linear(x, w1, b1), approximate="tanh"), w2, b2), x)
    assert launches(g) == ["template", "template"], step.ir("fused")
    infos = [n.attrs["info"] for n in g.nodes if n.op == "kernel"]
    assert infos == ["template matmul+bias+gelu_tanh", "template matmul+bias+residual"]
    # erf GELU is not a template activation: matmul, then one pointwise kernel for bias + GELU
    g, _ = fused(lambda x: F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2), x)
    assert launches(g) == ["matmul", "pointwise", "template"]
    matmuls = [m for n in g.nodes for m in ([n] if n.op != "kernel" else n.attrs["body"].nodes) if m.op == "matmul"]
    assert len(matmuls) == 2     # never recomputed


def test_style_example_prints_two_kernels():
    g, step = fused(lambda x, w, b: F.gelu(x @ w + b).sum(), rnd(4, 8), rnd(8, 16), rnd(16))
    text = step.ir("fused")
    assert "-> 2 kernels" in text.splitlines()[0]
    assert "= ops.matmul(x, w)" in text and "# k0 extern matmul" in text
    assert "= k1_red_fused_add_gelu_sum(t0, b)" in text and "# k1 reduction 64 -> 1" in text


def test_cross_entropy_template_and_decomposition():
    x, t = rnd(8, 32, grad=True), tg.tensor(np.arange(8) * 3 % 32)

    def step(x, t):
        loss = F.cross_entropy(x, t)
        loss.backward()
        return loss, x.grad
    g, _ = fused(step, x, t)
    assert launches(g) == ["cross_entropy", "cross_entropy_bwd"]
    # without the template, the decomposition is one row kernel and one for the mean
    plain = tg.compile(step, backend="numpy")
    plain(x, t)
    dec = fuse(simplify(decompose(plain.graphs()["optimized"])))
    kinds = launches(dec)
    assert kinds.count("reduction") <= 3 and len(kinds) <= 4, format_fused(dec)


def test_adamw_update_is_a_few_foreach_launches():
    params = [tg.nn.Parameter(rnd(*s, seed=i)) for i, s in enumerate([(16, 8), (8, 8), (8, 4), (4, 16)])]
    opt = tg.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    x = rnd(4, 16, seed=9)

    def step(x):
        h = x @ params[0]
        h = (h @ params[1]).tanh() @ params[2]
        loss = (h @ params[3] * x).sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss
    g, _ = fused(step, x)
    update = [n for n in g.nodes if n.op == "kernel" and n.phase == "update"]
    assert len(update) <= 2, format_fused(g)
    assert any(n.attrs["kind"] == "foreach" for n in update)


# -- the log, legality, invariants ----------------------------------------------------------------------
def test_the_log_explains_a_refused_pair(caplog):
    with caplog.at_level(logging.INFO, logger="tracegrad.fusion"):
        fused(lambda x, w: (x @ w).exp(), rnd(4, 8), rnd(8, 16))
    assert any("cannot fuse" in r.message and "(matmul)" in r.message and "extern kernel has no epilogue"
               in r.message for r in caplog.records), [r.message for r in caplog.records]


def test_a_reduction_read_along_its_own_axis_is_refused(caplog):
    # x - colsum(x) next to a row softmax: the column sum would be needed per row element
    def f(x):
        return x.softmax(-1) - x.sum(0, keepdim=True)
    with caplog.at_level(logging.INFO, logger="tracegrad.fusion"):
        g, _ = fused(f, rnd(8, 8))
    assert len(launches(g)) >= 2
    assert any("cannot fuse" in r.message for r in caplog.records)


def test_fused_graph_is_acyclic_and_computes_the_same():
    import networkx as nx
    x, w, b = rnd(6, 16, grad=True), rnd(16, grad=True), rnd(16, grad=True)

    def step(x, w, b):
        y = F.layer_norm(x, (16,), w, b).softmax(-1)
        (y * y.exp() + F.gelu(y)).mean().backward()
        return x.grad, w.grad, b.grad
    g, _ = fused(step, x, w, b)
    assert nx.is_directed_acyclic_graph(g.to_networkx())
    flat = decompose(g)   # kernels inline their bodies: the numpy reference runs the fused graph
    a = numpy_program.generate(flat)(x.numpy(), w.numpy(), b.numpy())
    x.grad = w.grad = b.grad = None
    plain = tg.compile(step, backend="numpy")
    want = plain(x, w, b)
    for got, ref in zip(a, want):
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-6)


def test_a_deep_chain_of_shared_scalars_fuses():
    """Scalars are recomputed by each reader; one read twice per step over 48 steps has 2^48 paths
    to its readers, so the walks that find them must visit each value once."""
    def step(x):
        y = x.exp()
        s = y[0, 0] * 0.1          # a scalar computed from an element of y
        for _ in range(48):
            s = s * s + s * 0.5
        return y * s
    x = rnd(4, 8)
    g, compiled = fused(step, x)
    assert len(launches(g)) <= 2
    np.testing.assert_allclose(compiled(x).numpy(), step(x).numpy(), rtol=1e-5)


def test_views_become_index_arithmetic():
    g, step = fused(lambda x: (x.transpose(0, 1).reshape(4, 8) * 2).exp()[1:3], rnd(8, 4))
    assert launches(g) == ["pointwise"]
    src = step.ir("kernels")
    assert "tl.load(in_ptr0 + (" in src and "permute" not in src


def test_a_padded_inputs_index_divides_within_its_range():
    """A padded input is read only where its condition holds, so its index lies in the input's range
    there: a reshape after the pad divides by what that range allows (col2im's loads lose their `//`),
    and on every kept lane the simplified index is the input's true one."""
    from types import SimpleNamespace
    from tracegrad.ir.passes.fusion_index import movement_index
    pad = SimpleNamespace(op="pad", attrs={"pads": ((0, 0), (1, 1), (2, 0))}, inputs=[SimpleNamespace(shape=(3, 5, 7))])
    x = Expr.sym(Sym("xindex", 3 * 7 * 9, "x"))
    idx, conds = movement_index(pad, unflatten(x, (3, 7, 9)))
    flat = linearize(idx, (3, 5, 7))
    rows = unflatten(flat, (3, 35))
    assert rows[0].code() == "(xindex // 63)"
    assert rows[1].code() == "7 * (((xindex // 9) % 7) - 1) + ((xindex % 9) - 2)"     # no // 7 or % 35 of it
    for xindex in range(3 * 7 * 9):
        b, i, j = np.unravel_index(xindex, (3, 7, 9))
        kept = all(eval(c.code(), {"xindex": xindex}) for c in conds)
        assert kept == (1 <= i < 6 and 2 <= j < 9)
        if kept:
            assert eval(flat.code(), {"xindex": xindex}) == np.ravel_multi_index((b, i - 1, j - 2), (3, 5, 7))
            assert eval(rows[1].code(), {"xindex": xindex}) == (i - 1) * 7 + j - 2


def test_index_algebra_merges_what_reshape_split():
    x = Expr.sym(Sym("xindex", 60, "x"))
    assert linearize(unflatten(x, (3, 4, 5)), (3, 4, 5)) == x
    i, j = unflatten(x, (6, 10))
    r = Expr.sym(Sym("rindex", 10, "r"))
    assert unflatten(linearize((i, r), (6, 10)), (2, 3, 10))[0].code() == "(xindex // 30)"
    assert (x * 6 + 5).floordiv(6) == x and (x * 6 + 5).mod(6) == Expr.const(5)
