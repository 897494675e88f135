"""The Triton backend on the CPU: generated kernels run under Triton's interpreter on numpy
buffers and must agree with the numpy backend (the reference).

- Random graphs from Hypothesis: tests/test_triton_random_graphs.py.
- The op table, through `tg.compile(..., backend="triton")` on CPU tensors.
- bf16 kernels, random numbers (bit-exact with the counter-based RNG), the kernel cache, and a
  small GPT training step.
- The CUDA runtime's host logic (buffers, bf16 as uint16, eager ops through the numpy lowerings)
  on a numpy stand-in for CuPy; the real thing is tests/test_gpu.py (marker gpu).
- The generated kernels compiled for sm_90 ahead of time (Triton's compiler and ptxas, no GPU),
  with the CUDA block sizes: what the interpreter would let through.

Repro: python -m pytest tests/test_triton_codegen.py -k <name>   (a failing Hypothesis example
prints the graph it built, and `@reproduce_failure` to paste).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

triton = pytest.importorskip("triton")

import tracegrad as tg  # noqa: E402
from tracegrad.codegen import numpy_program, triton_codegen  # noqa: E402
from tracegrad.runtime import kernel_cache  # noqa: E402
from tracegrad.ir import GraphBuilder, TensorType  # noqa: E402
from tracegrad.ir.passes.fusion import fuse  # noqa: E402
from tracegrad.ir.types import bfloat16, float32, int64  # noqa: E402
from tracegrad.codegen.triton_program import TritonProgram  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from op_table import CASES, FORWARD_ONLY  # noqa: E402
from triton_check import _cache_dir, both  # noqa: E402,F401  (_cache_dir: an autouse fixture)
from fake_cupy import _fake_cupy, fake_cuda  # noqa: E402,F401  (fake_cuda: a fixture)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


# -- the op table -----------------------------------------------------------------------------------------
def _attrs(case):
    from tracegrad.ir import types
    return {k: types.dtype(v) if k == "dtype" else v for k, v in case.attrs.items()}


@pytest.mark.parametrize("case", CASES + FORWARD_ONLY, ids=lambda c: c.id)
def test_op_table_triton_matches_numpy(case):
    arrays = [a.astype(np.float32) if a.dtype == np.float64 else a for a in case.make(np.random.default_rng(1))]

    def step(*xs):
        out = getattr(tg.ops, case.op)(*xs, **_attrs(case))
        outs = out if isinstance(out, tuple) else (out,)
        return tuple(outs[i] for i in case.outputs)
    want = tg.compile(step, backend="numpy")(*[tg.tensor(a) for a in arrays])
    got = tg.compile(step, backend="triton")(*[tg.tensor(a) for a in arrays])
    for w, g in zip(want, got):
        assert w.dtype == g.dtype and w.shape == g.shape
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-6, err_msg=case.id)


@pytest.mark.parametrize("case", [c for c in CASES if c.diff], ids=lambda c: c.id)
def test_op_table_gradients_triton_match_numpy(case):
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
    for w, g in zip(run("numpy"), run("triton")):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-6, err_msg=case.id)


# -- dtypes, random numbers, the cache ----------------------------------------------------------------------
def test_bf16_kernels_round_like_numpy():
    b = GraphBuilder("bf16")
    x = b.input("x", TensorType((6, 40), bfloat16))
    y = b.input("y", TensorType((40,), bfloat16))
    z = b.mul(b.exp(b.neg(b.abs(x))), y)
    s = b.sum(b.cast_to(z, float32), axes=(1,), keepdim=True)
    out = b.cast_to(b.div(b.cast_to(z, float32), s), bfloat16)
    m = b.max(z, axes=(0,))
    g = b.finish([out, m])
    import ml_dtypes
    rng = np.random.default_rng(0)
    arrays = [rng.uniform(-2, 2, s).astype(ml_dtypes.bfloat16) for s in ((6, 40), (40,))]
    want, got = both(g, arrays)
    for w, gg in zip(want, got):
        assert gg.dtype == w.dtype
        np.testing.assert_allclose(gg.astype(np.float32), w.astype(np.float32), rtol=1e-2, atol=1e-3)


def test_random_ops_are_bit_exact_with_the_counter_rng():
    b = GraphBuilder("rng")
    state = b.input("state", TensorType((2,), int64))
    u, s1 = b.rand_uniform(state, shape=(5, 7), dtype=float32)
    n, s2 = b.rand_normal(s1, shape=(3, 9), dtype=float32)
    keep = b.where(b.ge(u, 0.3), b.mul(u, 2.0), 0.0)
    g = b.finish([keep, n, s2])
    arrays = [np.array([1234567, 2 ** 33 + 11], np.int64)]
    want, got = both(g, arrays)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got[2], want[2])


def test_long_rows_loop_and_short_rows_stay_in_registers():
    def graph(n):
        b = GraphBuilder(f"rows{n}")
        x = b.input("x", TensorType((3, n), float32))
        m = b.max(x, axes=(1,), keepdim=True)
        e = b.exp(b.sub(x, m))
        return b.finish([b.div(e, b.sum(e, axes=(1,), keepdim=True)), b.argmax(x, axis=1)])
    rng = np.random.default_rng(7)
    for n, looped_ in ((100, False), (20000, True)):
        g = graph(n)
        prog = TritonProgram(fuse(g))
        assert ("for roffset in range(0, %d, RBLOCK)" % n in prog.source) == looped_
        x = rng.standard_normal((3, n)).astype(np.float32)
        want, got = numpy_program.generate(g)(x), prog(x)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-9)
        np.testing.assert_array_equal(got[1], want[1])


def test_a_looped_row_output_that_no_reduction_feeds_is_stored_by_the_first_loop():
    """y = x^2 + cast and sum(y * y) over rows too long for registers: one pass over x, not a second
    loop that loads it again (also with a second reduction after the first)."""
    def graph(second: bool):
        b = GraphBuilder("norm")
        x = b.input("x", TensorType((4, 20000), float32))
        y = b.add(b.mul(x, x), 1.0)
        s = b.sum(b.mul(y, y), axes=(1,), keepdim=True)
        outs = [y, s] + ([b.max(b.sub(x, s), axes=(1,))] if second else [])
        return b.finish(outs)
    x = np.random.default_rng(3).standard_normal((4, 20000)).astype(np.float32)
    for second in (False, True):
        g = graph(second)
        fused = fuse(g)
        prog = TritonProgram(fused)
        assert prog.source.count("for roffset in range") == 1 + second, prog.source
        for got, want in zip(prog(x), numpy_program.generate(g)(x)):
            np.testing.assert_allclose(got, want, rtol=1e-5)


def test_kernels_are_cached_by_structure_and_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(tmp_path))
    kernel_cache.clear_memory()
    before = dict(kernel_cache.stats)

    def graph(name):
        b = GraphBuilder(name)
        x = b.input("x", TensorType((4, 8), float32))
        return b.finish([b.tanh(b.add(x, 1.0))])
    TritonProgram(fuse(graph("a")))
    TritonProgram(fuse(graph("b")))      # same structure: no new kernel
    assert kernel_cache.stats["written"] == before["written"] + 1
    assert kernel_cache.stats["memory_hits"] == before["memory_hits"] + 1
    assert len(list((tmp_path / "triton").glob("*.py"))) == 1
    kernel_cache.clear_memory()
    TritonProgram(fuse(graph("c")))      # a new process would find it on disk
    assert kernel_cache.stats["disk_hits"] == before["disk_hits"] + 1


def test_generated_source_names_origins_and_user_lines():
    x = tg.tensor(np.ones((4, 8), np.float32))
    step = tg.compile(lambda x: (x * 2).softmax(-1), backend="triton")
    step(x)
    src = step.ir("kernels")
    assert "@triton.jit" in src and "def k0_red_fused_mul_softmax(" in src
    assert "test_triton_codegen.py" in src and "softmax(-1)" in src     # the user's line, as a comment
    assert "launch(k0_red_fused_mul_softmax" in src


# -- a small GPT training step --------------------------------------------------------------------------------
def _gpt_step_params(rng, V=17, C=16, T=8, H=2):
    shapes = dict(wte=(V, C), wpe=(T, C), ln1_w=(C,), ln1_b=(C,), attn_w=(3 * C, C), attn_b=(3 * C,),
                  proj_w=(C, C), ln2_w=(C,), ln2_b=(C,), fc_w=(4 * C, C), fc_b=(4 * C,), fc2_w=(C, 4 * C),
                  lnf_w=(C,), lnf_b=(C,))
    out = {}
    for k, s in shapes.items():
        if k.endswith("_w") and k.startswith("ln"):
            out[k] = np.ones(s, np.float32)
        elif k.endswith("_b"):
            out[k] = np.zeros(s, np.float32)
        else:
            out[k] = (rng.standard_normal(s) * 0.2).astype(np.float32)
    return out


def _gpt(p, idx, targets, H=2, dropout_p=0.1):
    import tracegrad.nn.functional as F
    B, T = idx.shape
    C = p["wte"].shape[1]
    x = F.embedding(idx, p["wte"]) + p["wpe"]
    h = F.layer_norm(x, (C,), p["ln1_w"], p["ln1_b"])
    q, k, v = F.linear(h, p["attn_w"], p["attn_b"]).split(C, dim=-1)
    q, k, v = (t.reshape(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    x = x + F.dropout(F.linear(a.transpose(1, 2).reshape(B, T, C), p["proj_w"]), dropout_p)
    h = F.layer_norm(x, (C,), p["ln2_w"], p["ln2_b"])
    x = x + F.linear(F.gelu(F.linear(h, p["fc_w"], p["fc_b"]), approximate="tanh"), p["fc2_w"])
    logits = F.linear(F.layer_norm(x, (C,), p["lnf_w"], p["lnf_b"]), p["wte"])
    return F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1))


@pytest.mark.parametrize("head_dim", [8, 16])    # 16: the flash-attention template; 8: decomposed
def test_gpt_training_step_matches_numpy(head_dim):
    rng = np.random.default_rng(0)
    arrays = _gpt_step_params(rng, C=2 * head_dim)
    idx = rng.integers(0, 17, (2, 8))
    tgt = rng.integers(0, 17, (2, 8))

    def run(backend):
        tg.manual_seed(0)
        params = {k: tg.nn.Parameter(tg.tensor(v)) for k, v in arrays.items()}
        opt = tg.optim.AdamW(list(params.values()), lr=1e-2, weight_decay=0.1)

        @tg.compile(backend=backend)
        def step(idx, tgt):
            loss = _gpt(params, idx, tgt)
            loss.backward()
            tg.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
            opt.step()
            opt.zero_grad()
            return loss
        losses = [step(tg.tensor(idx), tg.tensor(tgt)).item() for _ in range(3)]
        return losses, {k: p.numpy() for k, p in params.items()}, step
    want_losses, want_params, _ = run("numpy")
    got_losses, got_params, step = run("triton")
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-5)
    C = arrays["wte"].shape[1]
    for k in want_params:
        got, want = got_params[k], want_params[k]
        if k == "attn_b":   # NOTE: the key bias has a zero gradient in exact math (softmax ignores a
            got, want = np.delete(got, np.s_[C:2 * C]), np.delete(want, np.s_[C:2 * C])  # row shift);
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=k)    # AdamW amplifies noise
    fused = step.graphs()["fused"]
    assert fused.meta["kernels"] < len(step.graphs()["optimized"].nodes) / 3


# -- the CUDA runtime's host logic, on a numpy stand-in for CuPy (tests/fake_cupy.py) -----------------------
@pytest.mark.parametrize("case", CASES + FORWARD_ONLY, ids=lambda c: c.id)
def test_eager_cuda_ops_on_a_cupy_stand_in(fake_cuda, case):
    arrays = [a.astype(np.float32) if a.dtype == np.float64 else a for a in case.make(np.random.default_rng(5))]
    cpu = getattr(tg.ops, case.op)(*[tg.tensor(a) for a in arrays], **_attrs(case))
    gpu = getattr(tg.ops, case.op)(*[tg.tensor(a).to("cuda") for a in arrays], **_attrs(case))
    for c, g in zip(cpu if isinstance(cpu, tuple) else (cpu,), gpu if isinstance(gpu, tuple) else (gpu,)):
        assert g.device == "cuda:0" and type(g._data).__module__.startswith("cupy"), case.id
        np.testing.assert_allclose(g.numpy(), c.numpy(), rtol=1e-6, atol=1e-7, err_msg=case.id)


def test_bf16_on_a_cupy_stand_in_is_uint16_and_rounds_like_ml_dtypes(fake_cuda):
    from tracegrad.runtime.devices import TypedArray
    x = np.random.default_rng(6).uniform(-3, 3, (16, 33)).astype(np.float32)
    x[0, :4] = [np.nan, np.inf, -np.inf, 1.0 + 2 ** -8]      # a tie: rounds to even
    t = tg.tensor(x).to(tg.bfloat16).to("cuda")
    assert isinstance(t._data, TypedArray) and t._data.array.dtype == np.uint16
    for fn in (lambda t: t.exp() * t, lambda t: t.softmax(-1), lambda t: t.float() * 3, lambda t: (t @ t.T).sum(-1)):
        want = fn(tg.tensor(x).to(tg.bfloat16)).float().numpy()
        got = fn(t).float().numpy()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    r = fake_cuda.round_bf16(_fake_cupy()["cupy"].asarray(x))
    np.testing.assert_array_equal(r.get().view(np.uint16), x.astype(ml_dtypes_bf16()).view(np.uint16))


def ml_dtypes_bf16():
    import ml_dtypes
    return ml_dtypes.bfloat16


# -- the same kernels, compiled for an H100 ahead of time (no GPU needed) -------------------------------------
_TL = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float64": "fp64", "int64": "i64", "int32": "i32",
       "bool": "i1", "int8": "i8", "uint8": "u8", "int16": "i16", "uint32": "u32"}


def compile_for_sm90(fused_graph, check_nans: bool = False) -> int:
    """Compile every generated kernel of a fused graph to a cubin for sm_90 with the block sizes the
    CUDA table picks: catches what the interpreter lets through (types, layouts, constexprs)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    gen = triton_codegen.generate(fused_graph, "cuda", check_nans=check_nans)
    for ks in gen.kernels:
        fn = kernel_cache.load(ks.source, ks.name, ks.key)
        _, meta = triton_codegen.launch_config(ks, "cuda")
        consts = {k: v for k, v in meta.items() if k not in ("num_warps", "num_stages")}
        sig = {name: "*" + _TL[v.type.dtype.name] for name, v in zip(fn.arg_names, ks.args)}
        if ks.sites:           # the index checks' flag rows
            sig["chk_ptr"] = "*i64"
        if check_nans:
            sig["nan_ptr"] = "*i32"
        sig.update({k: "constexpr" for k in consts})
        src = ASTSource(fn, sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
        triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=meta.get("num_warps", 4)))
    return len(gen.kernels)


def _big_graphs():
    from tracegrad.ir.passes import decompose, simplify
    for dt in (float32, bfloat16):     # the benchmark's shapes: persistent rows of 8192
        b = GraphBuilder("rows")
        x, w, bias = (b.input(n, TensorType(s, dt)) for n, s in (("x", (16384, 8192)), ("w", (8192,)), ("b", (8192,))))
        yield simplify(decompose(b.finish([b.softmax(x, axis=1), b.layer_norm(x, w, bias, eps=1e-5),
                                           b.rms_norm(x, w, eps=1e-6)])))
    b = GraphBuilder("ce")             # cross-entropy over GPT-2's vocabulary: looped rows, a gather
    x, t = b.input("x", TensorType((16384, 50304), bfloat16)), b.input("t", TensorType((16384,), int64))
    loss, lse = b.cross_entropy(x, t)
    yield simplify(decompose(b.finish([loss, b.cross_entropy_bwd(x, t, lse, b.full((), 1.0, float32))])))
    b = GraphBuilder("dropout")        # the RNG inside a kernel, and the state it writes back
    s, x = b.input("s", TensorType((2,), int64)), b.input("x", TensorType((4096, 1024), bfloat16))
    u, s2 = b.rand_uniform(s, shape=(4096, 1024), dtype=float32)
    yield b.finish([b.where(b.ge(u, 0.1), x, b.full((), 0.0, bfloat16)), s2])
    b = GraphBuilder("wide")           # more than 2**31 elements: 64-bit indices
    x = b.input("x", TensorType((70000, 32768), bfloat16))
    yield b.finish([b.sum(b.cast_to(x, float32), axes=(1,))])


def test_generated_kernels_compile_for_sm90():
    pytest.importorskip("triton.backends.nvidia")
    import triton  # noqa: F401
    n = sum(compile_for_sm90(fuse(g)) for g in _big_graphs())
    params = {k: tg.nn.Parameter(tg.tensor(v)) for k, v in _gpt_step_params(np.random.default_rng(0), C=32).items()}
    opt = tg.optim.AdamW(list(params.values()), lr=1e-2)

    @tg.compile(backend="triton")
    def step(idx, tgt):
        with tg.autocast(tg.bfloat16):
            loss = _gpt(params, idx, tgt)
        loss.backward()
        opt.step()
        return loss
    idx = tg.tensor(np.arange(16).reshape(2, 8) % 17)
    step(idx, idx)
    n += compile_for_sm90(step.graphs()["fused"])
    assert n > 20


def test_kernels_reading_attention_output_see_it_row_major():
    """Flash attention writes O as [B, T, H, D] (its [B, H, T, D] view goes back to the model width
    without a copy); a generated kernel reading O directly still indexes it right."""
    import tracegrad.nn.functional as F
    rng = np.random.default_rng(4)
    q, k, v = (tg.tensor(rng.standard_normal((2, 2, 16, 16)).astype(np.float32)) for _ in range(3))

    def f(q, k, v):
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return o * 2.0 + 1.0, o.transpose(1, 2).reshape(2, 16, 32) @ tg.ones(32, 8)
    step = tg.compile(f, backend="triton")
    got = step(q, k, v)
    want = tg.compile(f, backend="numpy")(q, k, v)
    assert "scaled_dot_product_attention" in step.ir("kernels")
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=1e-5)


def test_profile_times_each_launch_and_explain_shows_its_share():
    rng = np.random.default_rng(6)
    w = tg.tensor(rng.standard_normal((16, 8)).astype(np.float32))
    x = tg.tensor(rng.standard_normal((32, 16)).astype(np.float32))

    @tg.compile(backend="triton")
    def f(x, w):
        return tg.nn.functional.gelu(x @ w).sum(0)
    want = f(x, w).numpy()
    assert "profiled" not in f.explain()
    np.testing.assert_allclose(f.profile(x, w).numpy(), want, rtol=1e-6)
    text = f.explain()
    assert "profiled:" in text and "% " in text
    times = f.entries[-1].program.launch_ms
    assert sorted(times) == list(range(len(times))) and len(times) >= 2 and all(t > 0 for t in times.values())
    shares = [float(s.split("ms, ")[1].rstrip("%]")) for s in text.splitlines() if s.strip().endswith("%]")]
    assert len(shares) == len(times) and abs(sum(shares) - 100) < 1


def test_a_pooling_cnn_steps_kernels_compile_for_sm90():
    """Max-pool as a tree of selects, its backward into the windows, conv taps and their pads: what
    the interpreter runs must also compile for the GPU."""
    pytest.importorskip("triton.backends.nvidia")
    conv = tg.nn.Conv2d(1, 4, 3, padding=1)
    opt = tg.optim.AdamW(conv.parameters(), lr=1e-3)

    @tg.compile(backend="triton")
    def step(x):
        y = tg.nn.functional.max_pool2d(conv(x).relu(), 2)
        loss = (y + tg.nn.functional.max_pool2d(y, 3, stride=1, padding=1)).sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss
    x = tg.tensor(np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(np.float32))
    step(x)
    assert compile_for_sm90(step.graphs()["fused"]) >= 3
