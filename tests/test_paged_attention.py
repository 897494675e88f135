"""The paged-attention decode kernel (runtime/templates/paged_attention.py) under Triton's interpreter,
against the serving engine's gather path (`prefill_attend` with one new token) and the op's
decomposition: grouped-query and multi-head, block sizes 4 and 16, contexts of 0, 1 and many
tokens, tables in shuffled block order, the context in one part or cut into several (merged by a
second kernel), head dims below 16 (broadcast products) and from 16 (tensor-core dots). Also: the compiled Triton step keeps the op as its template,
the kernel compiles for sm_90, and bad shapes fail naming the op."""
from __future__ import annotations

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.codegen.eager import _run_cpu
from tracegrad.serve.attention import decode_attend, prefill_attend

triton = pytest.importorskip("triton")
from tracegrad.runtime.templates.paged_attention import _merge_parts, _paged_decode, paged_attention, plan  # noqa: E402

# (B, H, Hkv, D, block_size, context lengths)
SHAPES = [(3, 4, 2, 16, 4, [1, 0, 9]), (2, 4, 4, 32, 16, [33, 5]), (1, 8, 1, 64, 4, [17]),
          (4, 6, 2, 8, 16, [0, 1, 16, 40]), (2, 2, 2, 16, 4, [2, 27])]


def _case(B, H, Hkv, D, bs, lens, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    M = -(-max(max(lens), 1) // bs) + 2                       # a table wider than any context
    n_blocks = B * M + 3
    S = (n_blocks + 1) * bs
    f = lambda *s: rng.standard_normal(s).astype(dtype)      # noqa: E731
    order = rng.permutation(n_blocks)                         # rows own disjoint blocks, in shuffled order
    table = order[:B * M].reshape(B, M).astype(np.int64)
    return dict(q=f(B, H, D), k=f(B, Hkv, D), v=f(B, Hkv, D), kc=f(S, Hkv, D), vc=f(S, Hkv, D), table=table,
                lens=np.asarray(lens, np.int64), bs=bs)


def _gather_path(c):
    """The engine's prefill attention with T = 1: the cache gathered through per-token slots."""
    B, M = c["table"].shape
    bs = c["bs"]
    j = np.arange(M * bs)
    ctx_slots = c["table"][:, j // bs] * bs + j % bs
    t = {k: tg.tensor(v) for k, v in c.items() if k != "bs"}
    y = prefill_attend(t["q"][:, :, None], t["k"][:, :, None], t["v"][:, :, None], t["kc"], t["vc"],
                       tg.tensor(ctx_slots), t["lens"])
    return y.numpy()[:, :, 0]


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}-H{s[1]}-kv{s[2]}-D{s[3]}-bs{s[4]}")
def test_kernel_equals_the_gather_path_and_the_decomposition(shape, splits):
    c = _case(*shape)
    got = paged_attention(c["q"], c["k"], c["v"], c["kc"], c["vc"], c["table"], c["lens"], block_size=c["bs"],
                          splits=splits)
    # NOTE: fp32 sums in another order (tiles of the online softmax vs one softmax): tolerances, not equality
    np.testing.assert_allclose(got, _gather_path(c), rtol=1e-5, atol=2e-6)
    want = _run_cpu("paged_attention", [c["q"], c["k"], c["v"], c["kc"], c["vc"], c["table"], c["lens"]],
                    dict(block_size=c["bs"], scale=None))[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("seed", range(6))
def test_kernel_equals_the_gather_path_on_random_shapes(seed):
    rng = np.random.default_rng(100 + seed)
    B, Hkv, rep = int(rng.integers(1, 6)), int(rng.choice([1, 2, 4])), int(rng.choice([1, 2, 3, 4]))
    D, bs = int(rng.choice([8, 16, 32])), int(rng.choice([4, 16]))
    lens = [int(x) for x in rng.choice([0, 1, 2, bs - 1, bs, bs + 1, 3 * bs + 2, 50], B)]
    c = _case(B, Hkv * rep, Hkv, D, bs, lens, seed=seed)
    got = paged_attention(c["q"], c["k"], c["v"], c["kc"], c["vc"], c["table"], c["lens"], block_size=bs,
                          splits=int(rng.integers(1, 5)))
    np.testing.assert_allclose(got, _gather_path(c), rtol=1e-5, atol=2e-6, err_msg=str((B, Hkv, rep, D, bs, lens)))


@pytest.mark.parametrize("splits", [1, 2])
def test_a_row_without_context_attends_to_its_new_token_only(splits):
    c = _case(2, 4, 2, 16, 4, [0, 0], seed=1)
    got = paged_attention(c["q"], c["k"], c["v"], c["kc"], c["vc"], c["table"], c["lens"], block_size=4,
                          splits=splits)
    np.testing.assert_allclose(got, np.repeat(c["v"], 2, axis=1), rtol=1e-6)


def test_the_plan_cuts_the_context_only_when_rows_are_too_few_to_fill_the_gpu():
    one = plan(B=256, Hkv=8, rep=2, D=128, capacity=4096, cuda=True)
    assert one["SPLITS"] == 1 and one["USE_DOT"] and one["ROWS"] == 16
    few = plan(B=1, Hkv=8, rep=2, D=128, capacity=4096, cuda=True)
    assert few["SPLITS"] > 1 and few["SPLITS"] * few["PART"] >= 4096 > (few["SPLITS"] - 1) * few["PART"]
    assert few["PART"] % few["BLOCK_N"] == 0 and 1 * 8 * few["SPLITS"] >= 4 * 132 // 2
    narrow = plan(B=2, Hkv=2, rep=3, D=8, capacity=64, cuda=True)
    assert not narrow["USE_DOT"] and narrow["ROWS"] == 4


def test_bf16_kernel_is_close_to_fp32():
    import ml_dtypes
    c = _case(2, 4, 2, 32, 16, [20, 3], seed=2)
    bf = {k: (v.astype(ml_dtypes.bfloat16) if v.dtype == np.float32 else v) for k, v in c.items() if k != "bs"}
    got = paged_attention(*(bf[k] for k in ("q", "k", "v", "kc", "vc", "table", "lens")), block_size=16)
    assert got.dtype == ml_dtypes.bfloat16
    want = paged_attention(*(bf[k].astype(np.float32) if bf[k].dtype != np.int64 else bf[k]
                             for k in ("q", "k", "v", "kc", "vc", "table", "lens")), block_size=16)
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-2, atol=2e-2)    # one bf16 rounding


def test_compiled_triton_step_keeps_the_template_and_equals_numpy():
    c = _case(3, 4, 2, 16, 4, [5, 1, 11], seed=3)
    args = [tg.tensor(c[k]) for k in ("q", "k", "v", "kc", "vc", "table", "lens")]

    def step(q, k, v, kc, vc, table, lens):
        y = decode_attend(q[:, :, None], k[:, :, None], v[:, :, None], kc, vc, table, lens, 4)
        return y * 2.0
    tri, ref = tg.compile(step, backend="triton"), tg.compile(step, backend="numpy")
    got, want = tri(*args).numpy(), ref(*args).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
    assert sum(n.op == "paged_attention" for n in tri.graphs()["fused"].nodes) == 1
    assert "rt.paged_attention(" in tri.ir("kernels")


def test_bad_shapes_name_the_op():
    c = _case(2, 4, 2, 16, 4, [1, 2])
    t = {k: tg.tensor(v) for k, v in c.items() if k != "bs"}
    with pytest.raises(Exception, match="paged_attention"):
        tg.ops.paged_attention(t["q"], t["k"][:, :1].repeat(1, 3, 1), t["v"], t["kc"], t["vc"], t["table"],
                               t["lens"], block_size=4)
    with pytest.raises(Exception, match="paged_attention.*block_tables"):
        tg.ops.paged_attention(t["q"], t["k"], t["v"], t["kc"], t["vc"], t["table"].float(), t["lens"],
                               block_size=4)


@pytest.mark.parametrize("dt,rep,D,bs", [("bf16", 1, 64, 16), ("bf16", 2, 128, 16), ("fp32", 4, 32, 4),
                                         ("fp16", 3, 8, 4)])
def test_kernel_compiles_for_sm90(dt, rep, D, bs):
    """What the interpreter lets through (types, layouts, constexprs) is checked by compiling the
    kernel for an H100/H200 ahead of time, with the block sizes the CUDA path picks."""
    pytest.importorskip("triton.backends.nvidia")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    meta = plan(B=2, Hkv=2, rep=rep, D=D, capacity=1024, cuda=True)
    assert meta["SPLITS"] > 1
    consts = dict(meta, REP=rep, HEAD_DIM=D, BLOCK_SIZE=bs, PRECISION="ieee" if dt == "fp32" else "tf32")
    merge = dict(PART=meta["PART"], SPLITS=meta["SPLITS"], SPLITS_PAD=triton.next_power_of_2(meta["SPLITS"]),
                 HEAD_DIM=D)
    ptr = dict(Q=dt, K=dt, V=dt, KC=dt, VC=dt, O=dt, TABLES="i64", LENS="i64", PART_M="fp32", PART_L="fp32",
               PART_ACC="fp32")
    for fn, c in ((_paged_decode, consts), (_merge_parts, merge)):
        c = {k: v for k, v in c.items() if k in fn.arg_names}
        sig = {n: "constexpr" if n in c else "*" + ptr[n] if n in ptr else "fp32" if n == "sm_scale" else "i64"
               for n in fn.arg_names}
        src = ASTSource(fn, sig, constexprs={(fn.arg_names.index(k),): v for k, v in c.items()})
        triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4))


@pytest.mark.gpu
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}-H{s[1]}-kv{s[2]}-D{s[3]}-bs{s[4]}")
def test_kernel_on_cuda_equals_the_interpreter(shape):
    from tracegrad.runtime import devices
    c = _case(*shape)
    names = ("q", "k", "v", "kc", "vc", "table", "lens")
    want = paged_attention(*(c[k] for k in names), block_size=c["bs"])
    for dt, tol in ((tg.float32, 1e-5), (tg.bfloat16, 3e-2)):
        args = [tg.tensor(c[k]).to(dt if c[k].dtype == np.float32 else tg.long).to("cuda")._data for k in names]
        for splits in (None, 1, 3):
            got = devices.to_numpy(paged_attention(*args, block_size=c["bs"], splits=splits)).astype(np.float32)
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=str((dt, splits)))
