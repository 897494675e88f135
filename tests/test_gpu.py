"""The Triton backend compiled on a CUDA GPU (marker `gpu`: skipped without one).

    python -m pytest tests/test_gpu.py -m gpu

- eager ops on CUDA tensors (CuPy, bf16 as uint16 + a dtype tag) equal the CPU's;
- the op table through `tg.compile` on CUDA tensors equals the numpy backend (fp32 to 1e-4);
- flash attention forward and backward equal the decomposed attention;
- random numbers are bit-exact with the CPU's;
- a GPT-2-small training step on CUDA equals the numpy backend (fp32 to 1e-4, bf16 autocast to 1e-2).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import tracegrad as tg

sys.path.insert(0, os.path.dirname(__file__))
from op_table import CASES, FORWARD_ONLY  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.filterwarnings("ignore::RuntimeWarning")]


def _attrs(case):
    from tracegrad.ir import types
    return {k: types.dtype(v) if k == "dtype" else v for k, v in case.attrs.items()}


def _f32(arrays):
    return [a.astype(np.float32) if a.dtype == np.float64 else a for a in arrays]


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.size == 0:
        return 0.0
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


# -- buffers and eager ops --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int64", "bool"])
def test_tensors_move_to_cuda_and_back(dtype):
    x = tg.tensor(np.arange(12).reshape(3, 4) % 5).to(getattr(tg, dtype if dtype != "bool" else "bool"))
    y = x.to("cuda")
    assert y.device == "cuda:0" and y.dtype == x.dtype
    np.testing.assert_array_equal(y.to("cpu").numpy(), x.numpy())


@pytest.mark.parametrize("case", CASES + FORWARD_ONLY, ids=lambda c: c.id)
def test_eager_op_on_cuda_matches_cpu(case):
    arrays = _f32(case.make(np.random.default_rng(0)))
    cpu = getattr(tg.ops, case.op)(*[tg.tensor(a) for a in arrays], **_attrs(case))
    gpu = getattr(tg.ops, case.op)(*[tg.tensor(a).to("cuda") for a in arrays], **_attrs(case))
    cpu, gpu = (o if isinstance(o, tuple) else (o,) for o in (cpu, gpu))
    for c, g in zip(cpu, gpu):
        assert g.device == "cuda:0" and g.dtype == c.dtype and g.shape == c.shape
        assert rel_err(g.numpy(), c.numpy()) < 1e-5, case.id


def test_eager_bf16_on_cuda_rounds_like_cpu():
    x = np.random.default_rng(1).uniform(-3, 3, (64, 33)).astype(np.float32)
    for fn in (lambda t: t.exp() * t, lambda t: t.softmax(-1), lambda t: (t @ t.T).sum(-1)):
        cpu = fn(tg.tensor(x).to(tg.bfloat16)).float().numpy()
        gpu = fn(tg.tensor(x).to(tg.bfloat16).to("cuda")).float().numpy()
        assert rel_err(gpu, cpu) < 1e-2


# -- compiled ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES + FORWARD_ONLY, ids=lambda c: c.id)
def test_op_table_compiled_on_cuda_matches_numpy(case):
    arrays = _f32(case.make(np.random.default_rng(1)))

    def step(*xs):
        out = getattr(tg.ops, case.op)(*xs, **_attrs(case))
        outs = out if isinstance(out, tuple) else (out,)
        return tuple(outs[i] for i in case.outputs)
    want = tg.compile(step, backend="numpy")(*[tg.tensor(a) for a in arrays])
    got = tg.compile(step)(*[tg.tensor(a).to("cuda") for a in arrays])      # "auto": Triton on CUDA
    for w, g in zip(want, got):
        assert g.device == "cuda:0" and g.dtype == w.dtype and g.shape == w.shape
        assert rel_err(g.numpy(), w.numpy()) < 1e-4, case.id


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(64, 1000), (8, 20000), (3, 7)])
def test_fused_norms_and_softmax_on_cuda(dtype, shape):
    import tracegrad.nn.functional as F
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(np.float32)
    w, b = rng.standard_normal(shape[-1:]).astype(np.float32), rng.standard_normal(shape[-1:]).astype(np.float32)
    d = getattr(tg, dtype)

    def step(x, w, b):
        return (x.softmax(-1), F.layer_norm(x, shape[-1:], w, b), F.rms_norm(x, shape[-1:], w))
    args = [tg.tensor(a).to(d) for a in (x, w, b)]
    want = tg.compile(step, backend="numpy")(*args)
    got = tg.compile(step)(*[a.to("cuda") for a in args])
    for wv, g in zip(want, got):
        assert rel_err(g.float().numpy(), wv.float().numpy()) < (1e-4 if dtype == "float32" else 1e-2)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_flash_attention_matches_decomposed(causal, head_dim, dtype):
    import tracegrad.nn.functional as F
    rng = np.random.default_rng(3)
    q, k, v, do = (rng.standard_normal((2, 3, 100, head_dim)).astype(np.float32) for _ in range(4))
    d = getattr(tg, dtype)

    def step(q, k, v, do):
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        o.backward(do)
        return o, q.grad, k.grad, v.grad

    def run(backend, device):
        ts = [tg.tensor(a).to(d).to(device) for a in (q, k, v, do)]
        for t in ts[:3]:
            t.requires_grad_()
        step_ = tg.compile(step, backend=backend)
        return [t.float().numpy() for t in step_(*ts)], step_
    want, _ = run("numpy", "cpu")             # the decomposition, on the CPU
    got, compiled = run("auto", "cuda")       # the flash templates, on the GPU
    fused = compiled.graphs()["fused"]
    assert {"scaled_dot_product_attention", "scaled_dot_product_attention_bwd"} <= {n.op for n in fused.nodes}
    for name, g, w in zip(("o", "dq", "dk", "dv"), got, want):
        assert rel_err(g, w) < (1e-4 if dtype == "float32" else 2e-2), name


def test_random_numbers_on_cuda_equal_the_cpu():
    tg.manual_seed(11)
    cpu = tg.rand(1000, 7), tg.randn(333)
    tg.manual_seed(11)
    gpu = tg.rand(1000, 7, device="cuda"), tg.randn(333, device="cuda")
    np.testing.assert_array_equal(gpu[0].numpy(), cpu[0].numpy())
    assert rel_err(gpu[1].numpy(), cpu[1].numpy()) < 1e-5


def test_the_cuda_stream_starts_at_the_seed_whatever_the_cpu_drew():
    """As PyTorch's CUDA generator: a model initialized on the CPU then moved draws the same GPU
    numbers however many CPU numbers its initialization took (the first GPU draw of the process too)."""
    from tracegrad.generator import Generator, use_generator
    draws = []
    for n_cpu in (0, 5000):
        with use_generator(Generator(3)):
            tg.rand(n_cpu)
            draws.append(tg.rand(100, device="cuda").numpy())
    np.testing.assert_array_equal(draws[0], draws[1])


def test_dropout_in_a_compiled_step_on_cuda_matches_numpy():
    """The RNG state is lifted into the step; the kernel computes the counter hash itself."""
    import tracegrad.nn.functional as F
    x = np.random.default_rng(4).standard_normal((37, 50)).astype(np.float32)

    def step(x):
        return F.dropout(x, 0.3, training=True) * 2
    tg.manual_seed(5)
    want = tg.compile(step, backend="numpy")(tg.tensor(x))
    tg.manual_seed(5)
    got = tg.compile(step)(tg.tensor(x).to("cuda"))
    np.testing.assert_array_equal(got.numpy(), want.numpy())


# -- a GPT-2-small training step -------------------------------------------------------------------------------
def _gpt_run(device, backend, amp, steps=2, B=2, T=64):
    from tracegrad.models.gpt import GPT, GPTConfig
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=T, vocab_size=50304, n_layer=12, n_head=12, n_embd=768, dropout=0.0))
    model.to(device)
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-4)

    @tg.compile(backend=backend)
    def train_step(x, y):
        with tg.autocast(amp, enabled=amp is not None):
            _, loss = model(x, y)
        loss.backward()
        tg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return loss
    rng = np.random.default_rng(0)
    x = tg.tensor(rng.integers(0, 50257, (B, T))).to(device)
    y = tg.tensor(rng.integers(0, 50257, (B, T))).to(device)
    losses = [train_step(x, y).item() for _ in range(steps)]
    w = model.transformer.h[0].mlp.c_fc.weight.numpy()
    return losses, w, train_step


@pytest.mark.parametrize("amp, tol", [(None, 1e-4), ("bfloat16", 1e-2)], ids=["fp32", "bf16"])
def test_gpt2_small_training_step_on_cuda_matches_numpy(amp, tol):
    amp = getattr(tg, amp) if amp else None
    want_losses, want_w, _ = _gpt_run("cpu", "numpy", amp)
    got_losses, got_w, step = _gpt_run("cuda", "auto", amp)
    np.testing.assert_allclose(got_losses, want_losses, rtol=tol)
    if amp is None:
        assert rel_err(got_w, want_w) < tol
    else:   # Adam moves each weight ~lr per step; bf16 noise can flip a tiny gradient's sign
        assert np.abs(got_w - want_w).max() <= 2 * 3e-4 * 2 * 1.05
    assert step.graphs()["fused"].meta["kernels"] > 0


def test_grad_scaler_on_cuda_matches_the_cpu():
    """fp32 model, scaled loss, an overflowing batch: the same scales and weights on CUDA as on the CPU."""
    def run(device):
        tg.manual_seed(0)
        lin = tg.nn.Linear(8, 4).to(device)
        opt = tg.optim.SGD(lin.parameters(), lr=0.1)
        scaler = tg.amp.GradScaler(device, init_scale=256.0, growth_interval=1)

        @tg.compile
        def step(x):
            scaler.scale(lin(x).square().mean()).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
        scales = []
        for v in (1.0, np.inf, 0.5):
            step(tg.tensor(np.full((4, 8), v, np.float32)).to(device))
            scales.append(scaler.get_scale())
        return scales, lin.weight.numpy()
    (cpu_scales, cpu_w), (gpu_scales, gpu_w) = run("cpu"), run("cuda")
    assert gpu_scales == cpu_scales == [512.0, 256.0, 512.0]
    assert rel_err(gpu_w, cpu_w) < 1e-5


# -- matmul through cuBLAS (bf16 too), in the layouts a compiled step hands over ----------------------------
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cublas_gemm_matches_numpy_in_every_layout(dtype):
    import ml_dtypes
    from tracegrad.runtime import cublas
    from tracegrad.runtime.devices import map_array, to_numpy, transfer
    rng = np.random.default_rng(0)
    npdt = np.float32 if dtype == "float32" else ml_dtypes.bfloat16

    def dev(a):
        return transfer(np.ascontiguousarray(a.astype(npdt)), "cuda:0")
    for (M, K, N) in ((64, 48, 80), (1, 32, 7), (130, 1, 33)):
        a, b = rng.standard_normal((M, K)), rng.standard_normal((K, N))
        want = a.astype(npdt).astype(np.float64) @ b.astype(npdt).astype(np.float64)
        views = {"a b": (dev(a), dev(b)),
                 "a.T.T b.T.T": (map_array(lambda x: x.T, dev(a.T)), map_array(lambda x: x.T, dev(b.T)))}
        for name, (x, y) in views.items():
            assert cublas.supports(x, y)
            got = to_numpy(cublas.gemm(x, y)).astype(np.float64)
            # NOTE: fp32 products on cuBLAS and numpy sum in different orders; bf16 rounds the output
            assert rel_err(got, want) < (1e-5 if dtype == "float32" else 1e-2), (name, M, K, N)
    a, b = rng.standard_normal((3, 20, 16)), rng.standard_normal((3, 16, 24))
    want = np.matmul(a.astype(npdt).astype(np.float64), b.astype(npdt).astype(np.float64))
    assert rel_err(to_numpy(cublas.gemm(dev(a), dev(b))).astype(np.float64), want) < 1e-2
    want2 = np.matmul(a.astype(npdt).astype(np.float64), b[0].astype(npdt).astype(np.float64))
    assert rel_err(to_numpy(cublas.gemm(dev(a), dev(b[0]))).astype(np.float64), want2) < 1e-2


def test_column_reductions_on_cuda_match_numpy():
    """A bias gradient's column sum, split in two stages, fused with its producer, on the GPU."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 256, 384)).astype(np.float32)

    def step(x):
        h = tg.tanh(x.to(tg.bfloat16))
        return h, h.float().sum((0, 1)), (x * x).sum(0)
    want = tg.compile(step, backend="numpy")(tg.tensor(x))
    got = tg.compile(step)(tg.tensor(x).to("cuda"))
    for w, g in zip(want, got):
        assert rel_err(g.float().numpy(), w.float().numpy()) < 1e-2


def test_a_compiled_cuda_step_does_not_import_torch():
    """Triton's argument specializer imports torch to recognise its tensors; tracegrad keeps that
    import out of a first call (it costs seconds), so a step runs without torch loaded."""
    import subprocess
    code = """
import sys
import numpy as np
import tracegrad as tg
w = tg.randn(64, 64, device="cuda", requires_grad=True)
opt = tg.optim.AdamW([w], lr=1e-3)
@tg.compile
def step(x):
    loss = (x @ w).relu().sum()
    loss.backward(); opt.step(); opt.zero_grad()
    return loss
x = tg.randn(32, 64).to("cuda")
print(np.isfinite(step(x).item()), "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["True", "False"], out.stdout


def test_a_second_process_takes_the_matmul_choices_from_disk(tmp_path, monkeypatch):
    """The first compiled step times cuBLAS against the template per shape and keeps the winners;
    a later process (here: the same, with its memory cleared) times nothing."""
    from tracegrad.runtime import externs, measured
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(tmp_path))
    measured.forget()
    monkeypatch.setattr(externs, "MATMUL_CHOICE", {})
    a = tg.randn(256, 192).to("cuda")
    b = tg.randn(192, 320).to("cuda")
    want = tg.compile(lambda a, b: (a @ b).relu())(a, b).numpy()
    assert (tmp_path / "measured.json").exists()
    measured.forget()
    monkeypatch.setattr(externs, "MATMUL_CHOICE", {})
    monkeypatch.setattr(externs, "_measure", lambda *f: (_ for _ in ()).throw(AssertionError("timed again")))
    got = tg.compile(lambda a, b: (a @ b).relu() + 0.0)(a, b).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    measured.forget()


def test_the_first_call_compiles_templates_and_kernels_ahead_in_workers(tmp_path, monkeypatch):
    """On fresh caches, the first call's dry run finds the attention and matmul templates beside the
    generated kernels, worker processes compile them, and the step still equals the numpy backend."""
    import tracegrad.nn.functional as F
    from tracegrad.runtime import externs, kernel_cache
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(tmp_path / "tg"))
    monkeypatch.setattr(externs, "FORCE_MATMUL", "template")
    kernel_cache.clear_memory()
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((2, 2, 80, 64)).astype(np.float32) for _ in range(3))
    w = rng.standard_normal((64, 48)).astype(np.float32)

    def step(q, k, v, w):
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = (o @ w).tanh()
        y.sum().backward()
        return y, q.grad, w.grad

    def run(backend, device):
        ts = [tg.tensor(a).to(device).requires_grad_() for a in (q, k, v, w)]
        compiled = tg.compile(step, backend=backend)
        return [t.numpy() for t in compiled(*ts)], compiled
    want, _ = run("numpy", "cpu")
    got, compiled = run("auto", "cuda")
    counts = compiled.entries[-1].program.compile_counts
    assert counts["in_workers"] >= 4, counts
    assert {"_attn_fwd", "_attn_bwd_dq", "_attn_bwd_dkdv", "_matmul_kernel"} <= set(counts["names"]), counts
    assert any(n.startswith("k") for n in counts["names"]), counts
    for g, wv in zip(got, want):
        assert rel_err(g, wv) < 1e-4
    kernel_cache.clear_memory()
