"""The fused CPU backend (`backend="cpu"`: the fusion groups as numba loops) against the numpy reference:
a representative part of the op table in CI (every case under `-m slow`; each distinct kernel is a numba
compile of about a second), random graphs, a GPT training step, and the loop writer's own choices.

Tolerances: the loops sum in float64 and in another order than numpy's pairwise sums, and tanh is a
rational fit within 2 ulp, so results agree to float32 rounding, not bit for bit.
"""
from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest

pytest.importorskip("numba")

import tracegrad as tg  # noqa: E402
from tracegrad.codegen.cpu_codegen import Unsupported, write_kernel  # noqa: E402
from tracegrad.codegen.cpu_program import fuse_for_cpu, generate  # noqa: E402
from tracegrad.codegen import numpy_program  # noqa: E402
from tracegrad.ir import GraphBuilder, TensorType  # noqa: E402
from tracegrad.ir.types import bfloat16, float32  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from op_table import CASES, FORWARD_ONLY  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture(autouse=True, scope="module")
def _cache_dir(tmp_path_factory):
    old = os.environ.get("TRACEGRAD_CACHE_DIR")
    os.environ["TRACEGRAD_CACHE_DIR"] = str(tmp_path_factory.mktemp("cpu_kernels"))
    yield
    if old is None:
        os.environ.pop("TRACEGRAD_CACHE_DIR")
    else:
        os.environ["TRACEGRAD_CACHE_DIR"] = old


REPRESENTATIVE = {"where", "argmax", "softmax", "layer_norm", "gelu", "cross_entropy", "gather", "pad", "concat"}


def _cases(cases):
    return [c if c.op in REPRESENTATIVE else pytest.param(c, marks=pytest.mark.slow) for c in cases]


def _attrs(case):
    from tracegrad.ir import types
    return {k: types.dtype(v) if k == "dtype" else v for k, v in case.attrs.items()}


@pytest.mark.parametrize("case", _cases(CASES + FORWARD_ONLY), ids=lambda c: c.id)
def test_op_table_cpu_matches_numpy(case):
    arrays = [a.astype(np.float32) if a.dtype == np.float64 else a for a in case.make(np.random.default_rng(1))]

    def step(*xs):
        out = getattr(tg.ops, case.op)(*xs, **_attrs(case))
        outs = out if isinstance(out, tuple) else (out,)
        return tuple(outs[i] for i in case.outputs)
    want = tg.compile(step, backend="numpy")(*[tg.tensor(a) for a in arrays])
    got = tg.compile(step, backend="cpu")(*[tg.tensor(a) for a in arrays])
    for w, g in zip(want, got):
        assert w.dtype == g.dtype and w.shape == g.shape
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-6, err_msg=case.id)


@pytest.mark.parametrize("case", _cases([c for c in CASES if c.diff]), ids=lambda c: c.id)
def test_op_table_gradients_cpu_match_numpy(case):
    arrays = [a.astype(np.float32) if a.dtype == np.float64 else a for a in case.make(np.random.default_rng(2))]

    def step(*xs):
        out = getattr(tg.ops, case.op)(*xs, **_attrs(case))
        out = out if not isinstance(out, tuple) else out[case.outputs[0]]
        w = tg.tensor(np.cos(np.arange(out.numel())).reshape(out.shape).astype(np.float32))
        (out * w).sum().backward()
        return tuple(xs[i].grad for i in case.diff)

    def run(backend):
        ts = [tg.tensor(a, requires_grad=i in case.diff) for i, a in enumerate(arrays)]
        return tg.compile(step, backend=backend)(*ts)
    for w, g in zip(run("numpy"), run("cpu")):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-6, err_msg=case.id)


def _agree(graph, arrays):
    want = numpy_program.generate(graph)(*arrays)
    got = generate(fuse_for_cpu(graph))(*arrays)
    for w, g, v in zip(want, got, graph.outputs):
        assert g.shape == w.shape and g.dtype == w.dtype, (v.name, g.shape, w.shape)
        np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(w, np.float64), rtol=2e-5, atol=1e-6,
                                   err_msg=f"{v.name}\n{graph}")


def test_random_graphs_agree():
    pytest.importorskip("triton")    # the graph generator lives beside the Triton tests
    from hypothesis import given, settings
    from test_triton_random_graphs import HYPOTHESIS, random_graphs

    @settings(max_examples=int(os.environ.get("TRACEGRAD_CPU_EXAMPLES", "8")), **HYPOTHESIS)
    @given(random_graphs())
    def check(case):
        _agree(*case)
    check()


def test_softmax_is_one_kernel_that_reads_its_row_once():
    b = GraphBuilder("softmax")
    x = b.input("x", TensorType((8, 300), float32))
    m = b.max(x, axes=(1,), keepdim=True)
    e = b.exp(b.sub(b.tanh(x), m))
    g = b.finish([b.div(e, b.sum(e, axes=(1,), keepdim=True))])
    fused = fuse_for_cpu(g)
    kernels = [n for n in fused.nodes if n.op == "kernel"]
    assert len(kernels) == 1
    src, = write_kernel("k", kernels[0].attrs["body"], kernels[0].attrs["kind"])
    # tanh(x) - max is computed once, kept in a row buffer, read back by the later loops
    assert src.source.count("tanh32(tmp") == 1 and "np.empty(300" in src.source
    _agree(g, [np.random.default_rng(0).normal(size=(8, 300)).astype(np.float32)])


def test_half_precision_groups_run_as_numpy_ops():
    b = GraphBuilder("half")
    x = b.input("x", TensorType((4, 8), float32))
    g = b.finish([b.cast_to(b.mul(b.cast_to(x, bfloat16), b.cast_to(x, bfloat16)), float32)])
    body = next(n for n in fuse_for_cpu(g).nodes if n.op == "kernel").attrs["body"]
    with pytest.raises(Unsupported):
        write_kernel("k", body, "pointwise")
    _agree(g, [np.linspace(-2, 2, 32, dtype=np.float32).reshape(4, 8)])


def test_threads_split_rows_and_agree():
    from tracegrad.runtime import cpu_kernels
    b = GraphBuilder("rows")
    x = b.input("x", TensorType((256, 512), float32))
    g = b.finish([b.sum(b.mul(x, x), axes=(1,), keepdim=False), b.exp(b.neg(b.abs(x)))])
    arrays = [np.random.default_rng(1).normal(size=(256, 512)).astype(np.float32)]
    old = cpu_kernels._THREADS[0]
    try:
        cpu_kernels.set_threads(2)
        _agree(g, arrays)
    finally:
        cpu_kernels.set_threads(old)


def test_training_step_with_adamw_matches_numpy():
    x, y = tg.tensor(np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32)), tg.randn(8, 4)

    def run(backend):
        tg.manual_seed(0)
        model = tg.nn.Sequential(tg.nn.Linear(16, 32), tg.nn.GELU(approximate="tanh"), tg.nn.LayerNorm(32),
                                 tg.nn.Linear(32, 4))
        opt = tg.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)

        @tg.compile(backend=backend)
        def step(x, y):
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            tg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            return loss
        return [step(x, y).item() for _ in range(3)], [p.numpy().copy() for p in model.parameters()], step
    want, want_p, _ = run("numpy")
    got, got_p, step = run("cpu")
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for a, b in zip(got_p, want_p):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)    # NOTE: AdamW divides by sqrt(v): noise grows
    assert "foreach" in step.entries[-1].program.source    # the update of every parameter: one call per layout


def test_set_num_threads_sets_blas_and_the_kernels_together():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from tracegrad.runtime import cpu_kernels
    before = tg.get_num_threads()
    try:
        tg.set_num_threads(1)
        assert tg.get_num_threads() == 1 and cpu_kernels._THREADS[0] == 1
        blas = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        assert blas and all(n == 1 for n in blas)
        with pytest.raises(ValueError):
            tg.set_num_threads(0)
    finally:
        tg.set_num_threads(before)


def test_eager_ops_infer_types_once_per_signature():
    from tracegrad import dispatch
    a, b = tg.randn(3, 5), tg.randn(3, 5)
    (a + b).numpy()
    n = len(dispatch._INFERRED)
    for _ in range(5):
        c = a + b
    assert len(dispatch._INFERRED) == n
    np.testing.assert_allclose(c.numpy(), a.numpy() + b.numpy())
    with pytest.raises(tg.ShapeError):    # a bad call still names the shapes
        a + tg.randn(4, 2)


def test_a_broadcast_along_the_last_axis_runs_as_rows_and_columns():
    """A bias read at `xindex % D` becomes a loop over rows and D columns (no modulo per element,
    which kept numba's loop scalar); the values stay the numpy backend's."""
    rng = np.random.default_rng(4)
    x, b = (tg.tensor(rng.normal(size=s).astype(np.float32)) for s in ((64, 96), (96,)))

    def f(x, b):
        return tg.nn.functional.gelu(x + b, approximate="tanh")
    step = tg.compile(f, backend="cpu")
    np.testing.assert_allclose(step(x, b).numpy(), tg.compile(f, backend="numpy")(x, b).numpy(), rtol=1e-5, atol=1e-6)
    source = step.ir("kernels")
    assert "for xi in range(96):" in source and "(xindex % 96)" not in source, source


def test_a_value_per_row_is_read_at_the_row_of_a_row_and_column_loop():
    """`xindex // D` (softmax's row max, read by every element of the row) also becomes rows and
    columns, so what depends on the row alone is computed once a row."""
    rng = np.random.default_rng(5)
    x, m = (tg.tensor(rng.normal(size=s).astype(np.float32)) for s in ((48, 80), (48, 1)))

    def f(x, m):
        return (x - m.abs().log1p()).exp()
    step = tg.compile(f, backend="cpu")
    np.testing.assert_allclose(step(x, m).numpy(), tg.compile(f, backend="numpy")(x, m).numpy(), rtol=1e-5, atol=1e-6)
    source = step.ir("kernels")
    assert "for xi in range(80):" in source and "(xindex // 80)" not in source, source


def test_a_tiled_loop_indexes_by_row_and_column_without_dividing_the_flat_index():
    """The columns of an im2col ([N, C*9, H*W]: taps of a padded image) are read at `xindex % (H*W)`,
    so the loop runs over rows and H*W columns; its indices are written in terms of the two (no
    `xindex // (9*H*W)` and the like: two divisions an element cost more than the loads)."""
    rng = np.random.default_rng(6)
    x = tg.tensor(rng.normal(size=(2, 3, 6, 6)).astype(np.float32))
    w = tg.tensor(rng.normal(size=(4, 3, 3, 3)).astype(np.float32))

    def f(x, w):
        return tg.nn.functional.conv2d(x, w, padding=1).relu()
    step = tg.compile(f, backend="cpu")
    np.testing.assert_allclose(step(x, w).numpy(), tg.compile(f, backend="numpy")(x, w).numpy(), rtol=1e-5, atol=1e-5)
    source = step.ir("kernels")
    assert "for xi in range(36):" in source and "xindex //" not in source and "xindex %" not in source, source


def test_computed_offsets_are_unsigned():
    """numba gives a signed subscript Python's wraparound (a compare and select per access), which
    keeps LLVM from vectorizing; every computed offset is cast to an unsigned integer."""
    import re
    x = tg.tensor(np.random.default_rng(6).normal(size=(32, 64)).astype(np.float32))
    step = tg.compile(lambda x: (x.tanh() * x.sum(0)).sum(-1), backend="cpu")
    step(x)
    source = step.ir("kernels")
    subscripts = re.findall(r"\b(?:in|out)_ptr\d+\[([^\]]+)\]", source)
    assert subscripts and all(s.isdigit() or s.startswith("np.uint64(") for s in subscripts), subscripts


@pytest.mark.parametrize("shape, axes", [((16, 24, 40), (0, 1)), ((12, 16, 40), (1,)), ((96, 48), (0,))],
                         ids=["columns", "middle-axis", "x-is-the-column"])
def test_a_reduction_over_leading_axes_loops_over_blocks_of_columns(shape, axes):
    """A bias gradient (a column sum with its producers, as GELU's backward) reads rows with a
    stride when x is the column; the loops run over blocks of columns with one accumulator a
    column instead, and the row outputs no reduction feeds are stored by that same loop (tanh is
    computed once). sum, max (with a NaN, which max propagates) and argmax agree with numpy."""
    rng = np.random.default_rng(7)
    a = rng.normal(size=shape).astype(np.float32)
    a[(1,) * len(shape)] = np.nan
    x = tg.tensor(a)

    def f(x):
        y = tg.nn.functional.gelu(x, approximate="tanh")
        return y * 2.0, y.sum(axes), (x * 3.0).amax(axes), (x * 3.0).argmax(axes[0])
    step = tg.compile(f, backend="cpu")
    got, want = step(x), tg.compile(f, backend="numpy")(x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-5)
    source = step.ir("kernels")
    assert re.search(r"for rindex in range\(\d+\):\n\s+for xi in range\(\d+\):", source), source
    gelu = next(k for k in source.split("@numba.njit") if "tanh32(tmp" in k and "acc" in k)
    assert gelu.count("tanh32(tmp") == 1, gelu


@pytest.mark.parametrize("bad", [12, -1])
def test_a_bad_index_in_a_loop_is_an_index_error_at_the_users_line(bad):
    """Offsets are unsigned, so a gathered index is checked in the loop before it is used; the
    error names the value and the user's line, as the numpy backend's does."""
    emb = tg.nn.Embedding(10, 4)

    def f(i):
        return (emb(i) * 2.0).sum(-1)
    step = tg.compile(f, backend="cpu")
    ok = np.array([[1, 2, 3]])
    np.testing.assert_allclose(step(tg.tensor(ok)).numpy(), tg.compile(f, backend="numpy")(tg.tensor(ok)).numpy(),
                               rtol=1e-6)
    assert "raise IndexError" in step.ir("kernels")
    with pytest.raises(IndexError, match=rf"index {bad} is out of range \[0, 10\)(.|\n)*test_cpu_backend.py"):
        step(tg.tensor(np.array([[1, bad, 3]])))


def test_kernels_compile_when_the_program_is_built_for_the_types_they_are_called_with(monkeypatch):
    """Every loop is compiled once, up front (with a progress bar when that takes a while), for
    exactly the argument types the calls bring: no compile at the first call, and no second one."""
    from tracegrad.runtime import cpu_kernels
    ran = []
    run = cpu_kernels.Kernel.run

    def checked(self, arrays):
        ran.append(self.fn)
        assert len(self.fn.signatures) == 1, f"{self.name} was not compiled before its first call"
        return run(self, arrays)
    monkeypatch.setattr(cpu_kernels.Kernel, "run", checked)
    x = tg.tensor(np.random.default_rng(8).normal(size=(16, 48)).astype(np.float32))
    i = tg.tensor(np.arange(16) % 5)

    def f(x, i):
        return tg.nn.functional.cross_entropy(x.tanh() * 2.0, i), (x > 0).float().mean(0)
    step = tg.compile(f, backend="cpu")
    for _ in range(4):
        step(x, i)
    assert ran and all(len(fn.signatures) == 1 for fn in ran)


def test_max_pool_and_maximum_select_without_a_branch_and_keep_numpys_nans_and_ties():
    """np.maximum and max-pool's tree of `where(a >= b | isnan(a), a, b)` are written as numba's max
    under a test for NaN that is almost never false: a select on the comparison compiled to a branch
    per element, mispredicted half the time on data. The values stay numpy's: NaN wins, a tie keeps
    the first operand, and the pool's gradient goes to each window's first maximum."""
    rng = np.random.default_rng(8)
    xs = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    xs[0, 0, :2, :2] = 1.5                 # a tied window
    xs[1, 2, 4, 5] = np.nan                # a window with a NaN
    ys = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    ys[0, 1, 0, :4] = np.nan

    def f(x, y):
        out = tg.nn.functional.max_pool2d(x, 2) + tg.maximum(x, y).sum() * 0 + tg.minimum(x, y)[..., ::2, ::2]
        out.sum().backward()
        return out, x.grad

    got = [t.numpy() for t in tg.compile(f, backend="cpu")(tg.tensor(xs, requires_grad=True), tg.tensor(ys))]
    step = tg.compile(f, backend="numpy")
    want = [t.numpy() for t in step(tg.tensor(xs, requires_grad=True), tg.tensor(ys))]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)      # NOTE: selects only: equal, NaNs in the same places
    source = tg.compile(lambda x: tg.nn.functional.max_pool2d(x, 2), backend="cpu")
    source(tg.tensor(xs))
    text = source.ir("kernels")
    assert "max(tmp" in text and not re.search(r"\(tmp\d+ if tmp\d+ else tmp\d+\)", text), text


def test_a_select_on_a_loaded_mask_has_no_branch_and_keeps_every_bit():
    """A select whose condition is a boolean buffer (relu's mask, read in the backward) is written as
    bit operations (`select_f32`): x86 code made it a branch, mispredicted half the time. The result
    is the select's bit for bit: NaN, infinities and -0.0 kept where chosen, dropped where not."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(64, 48)).astype(np.float32)
    x[0, :6] = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45]
    mask = rng.random((64, 48)) < 0.5
    mask[0, :6] = [True, False, True, True, False, True]
    mask[1, :6] = False
    x[1, :6] = x[0, :6]

    def f(m, x, y):
        return tg.where(m, x * 2.0, y), tg.where(m, -0.0, x)

    args = [tg.tensor(mask), tg.tensor(x), tg.tensor(x[::-1].copy())]
    step = tg.compile(f, backend="cpu")
    got = [t.numpy() for t in step(*args)]
    want = [t.numpy() for t in tg.compile(f, backend="numpy")(*args)]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.view(np.int32), w.view(np.int32))
    assert "select_f32(" in step.ir("kernels")
