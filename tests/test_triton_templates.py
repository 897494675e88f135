"""Kernel templates (matmul, attention, cross-entropy) against float64 numpy.

On the CPU the kernels run under Triton's interpreter on numpy arrays, with
small odd shapes so every mask is exercised; `TestOnCuda` (marked gpu) runs
the same checks compiled, on CuPy arrays.  Repro one case:
    pytest tests/test_triton_templates.py -k "attention and causal"
"""
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("triton")
ml_dtypes = pytest.importorskip("ml_dtypes")

from tracegrad.runtime.templates import attention, cross_entropy, matmul  # noqa: E402
from tracegrad.runtime import devices, triton_host  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
TOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float16): 5e-3, BF16: 1e-2}
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def randn(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def put(x, cuda):
    """numpy -> the array kind under test (CuPy, or a TypedArray for bf16)."""
    if not cuda:
        return x
    import cupy
    return devices.bf16_array(x) if x.dtype == BF16 else cupy.asarray(x)


def assert_close(actual, expected, dtype, what=""):
    actual = devices.to_numpy(actual).astype(np.float64)
    err = np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30)
    assert err <= TOL[np.dtype(dtype)], f"{what}: max error {err:.2e} relative to max |ref| (dtype {dtype})"


# --------------------------------------------------------------------------
# float64 references
# --------------------------------------------------------------------------

def matmul_ref(a, b, bias, activation, residual):
    c = a.astype(np.float64) @ b.astype(np.float64)
    c = c + (bias.astype(np.float64) if bias is not None else 0)
    if activation == "relu":
        c = np.maximum(c, 0)
    elif activation == "gelu_tanh":
        c = 0.5 * c * (1 + np.tanh(np.sqrt(2 / np.pi) * (c + 0.044715 * c ** 3)))
    elif activation == "silu":
        c = c / (1 + np.exp(-c))
    return c + (residual.astype(np.float64) if residual is not None else 0)


def attention_ref(q, k, v, do, causal, scale):
    q, k, v, do = (x.astype(np.float64) for x in (q, k, v, do))
    s = q @ k.swapaxes(-1, -2) * scale
    if causal:  # top-left aligned, as torch's is_causal
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    m = s.max(-1, keepdims=True)
    p = np.exp(s - m)
    lse = m + np.log(p.sum(-1, keepdims=True))
    p = np.exp(s - lse)
    o = p @ v
    ds = p * (do @ v.swapaxes(-1, -2) - (do * o).sum(-1, keepdims=True))
    return o, lse[..., 0], ds @ k * scale, ds.swapaxes(-1, -2) @ q * scale, p.swapaxes(-1, -2) @ do


def cross_entropy_ref(x, t, ignore_index, eps, gy):
    x = x.astype(np.float64)
    N, V = x.shape
    lse = np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1)
    keep = t != ignore_index
    tt = np.where(keep, t, 0)
    loss = np.where(keep, lse - (1 - eps) * x[np.arange(N), tt] - eps / V * x.sum(1), 0.0)
    y = np.full((N, V), eps / V)
    y[np.arange(N), tt] += 1 - eps
    grad = (np.exp(x - lse[:, None]) - y) * gy / keep.sum() * keep[:, None]
    return loss.sum() / keep.sum(), lse, grad


# --------------------------------------------------------------------------
# Checks, shared by the CPU tests and TestOnCuda
# --------------------------------------------------------------------------

def check_matmul(cuda, shape_a, shape_b, dtype, activation="none", bias=False, residual=False,
                 transpose_b=False, **kw):
    rng = np.random.default_rng(0)
    a = randn(rng, shape_a, dtype)
    b = randn(rng, shape_b[:-2] + shape_b[:-3:-1], dtype).swapaxes(-1, -2) if transpose_b \
        else randn(rng, shape_b, dtype)
    out_shape = np.broadcast_shapes(shape_a[:-2], shape_b[:-2]) + (shape_a[-2], shape_b[-1])
    bias_ = randn(rng, shape_b[-1:], dtype) if bias else None
    res_ = randn(rng, out_shape, dtype) if residual else None
    c = matmul.matmul(put(a, cuda), put(b, cuda), put(bias_, cuda) if bias else None, activation,
                      put(res_, cuda) if residual else None, **kw)
    assert tuple(c.shape) == out_shape and devices.dtype_of(c) == np.dtype(dtype)
    assert_close(c, matmul_ref(a, b, bias_, activation, res_), dtype, f"matmul {activation}")


def check_attention(cuda, B, H, T_Q, T_K, D, dtype, causal, transposed=False, **kw):
    rng = np.random.default_rng(1)
    if transposed:  # [B, T, H, D] arrays seen as [B, H, T, D], as a GPT block makes them
        q, k, v = (randn(rng, (B, T, H, D), dtype).swapaxes(1, 2) for T in (T_Q, T_K, T_K))
    else:
        q, k, v = randn(rng, (B, H, T_Q, D), dtype), randn(rng, (B, H, T_K, D), dtype), \
            randn(rng, (B, H, T_K, D), dtype)
    do = randn(rng, (B, H, T_Q, D), dtype)
    scale = 0.7 / np.sqrt(D)
    o, lse = attention.attention_forward(put(q, cuda), put(k, cuda), put(v, cuda), causal, scale, **kw)
    grads = attention.attention_backward(put(q, cuda), put(k, cuda), put(v, cuda), o, lse,
                                         put(do, cuda), causal, scale, **kw)
    for name, got, ref in zip(("o", "lse", "dq", "dk", "dv"), (o, lse, *grads),
                              attention_ref(q, k, v, do, causal, scale)):
        assert_close(got, ref, np.float32 if name == "lse" else dtype, f"attention {name}")


def check_cross_entropy(cuda, N, V, dtype, eps, inplace=False, **kw):
    rng = np.random.default_rng(2)
    x = randn(rng, (N, V), dtype, scale=3.0)
    t = rng.integers(0, V, N)
    t[::5] = -1  # ignored rows
    loss_ref, lse_ref, grad_ref = cross_entropy_ref(x, t, -1, eps, 0.5)
    xd, td = put(x, cuda), put(t, cuda)
    loss, lse = cross_entropy.cross_entropy(xd, td, ignore_index=-1, label_smoothing=eps, **kw)
    assert_close(loss, loss_ref, np.float32, "cross_entropy loss")
    assert_close(lse, lse_ref, np.float32, "cross_entropy lse")
    grad = cross_entropy.cross_entropy_backward(xd, td, lse, 0.5, ignore_index=-1, label_smoothing=eps,
                                                inplace=inplace, **kw)
    assert (grad is xd) == inplace and devices.dtype_of(grad) == np.dtype(dtype)
    assert_close(grad, grad_ref, dtype, "cross_entropy dlogits")
    assert not devices.to_numpy(grad)[::5].any(), "ignored rows must get a zero gradient"


# --------------------------------------------------------------------------
# CPU: Triton's interpreter on numpy arrays
# --------------------------------------------------------------------------

@pytest.mark.parametrize("activation", matmul.ACTIVATIONS)
def test_matmul_epilogues(activation):
    check_matmul(False, (37, 29), (29, 45), np.float32, activation, bias=True, residual=True)


@pytest.mark.parametrize("dtype", [np.float16, BF16], ids=["fp16", "bf16"])
def test_matmul_batched_low_precision(dtype):
    check_matmul(False, (3, 20, 70), (70, 33), dtype, "gelu_tanh", bias=True)  # B shared by batches
    check_matmul(False, (2, 17, 16), (2, 16, 24), dtype, residual=True)


def test_matmul_strided_operand():
    check_matmul(False, (19, 40), (40, 23), np.float32, transpose_b=True)  # x @ w.T, no copy


def test_matmul_rejects_bad_shapes():
    with pytest.raises(ValueError, match="do not match"):
        matmul.matmul(np.ones((4, 8), np.float32), np.ones((7, 3), np.float32))
    with pytest.raises(ValueError, match="activation"):
        matmul.matmul(np.ones((4, 8), np.float32), np.ones((8, 3), np.float32), activation="tanh")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("T_Q,T_K,D", [(37, 37, 16), (24, 41, 32), (32, 48, 16)])  # last: no masks
def test_attention(causal, T_Q, T_K, D):
    check_attention(False, 2, 2, T_Q, T_K, D, np.float32, causal)


def test_attention_bf16_strided():
    check_attention(False, 1, 3, 45, 45, 16, BF16, causal=True, transposed=True)


@pytest.mark.parametrize("block_m,block_n", [(32, 16), (16, 32)])
def test_attention_block_shapes(block_m, block_n):
    # the causal split into unmasked and diagonal blocks, with unequal blocks
    check_attention(False, 1, 1, 70, 70, 16, np.float32, causal=True,
                    blocks=dict(BLOCK_M=block_m, BLOCK_N=block_n))


@pytest.mark.parametrize("eps", [0.0, 0.1], ids=["hard", "smoothed"])
@pytest.mark.parametrize("dtype", [np.float32, BF16], ids=["fp32", "bf16"])
def test_cross_entropy(dtype, eps):
    check_cross_entropy(False, 13, 150, dtype, eps)  # 3 chunks of 64, the last one masked


def test_cross_entropy_inplace():
    check_cross_entropy(False, 7, 100, np.float32, 0.05, inplace=True)


def test_cross_entropy_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, t = randn(rng, (9, 77), np.float32, 2.0), rng.integers(0, 77, 9)
    t[4] = -100
    loss, lse = cross_entropy.cross_entropy(x, t, label_smoothing=0.2)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(xt, torch.tensor(t), label_smoothing=0.2)
    ref.backward()
    assert abs(float(loss) - ref.item()) < 1e-5
    grad = cross_entropy.cross_entropy_backward(x, t, lse, label_smoothing=0.2)
    np.testing.assert_allclose(grad, xt.grad.numpy(), atol=1e-6)


def test_interpreter_leaves_triton_language_as_it_was():
    # The interpreter patches tl for each helper call; launch() must undo all
    # of it, or kernels compiled later in the same process break.
    import triton.language as tl
    spaces = [tl, tl.core, tl.math, tl.tensor, tl.dtype]
    snapshot = lambda: [{k: v for k, v in vars(o).items() if not k.startswith("__")} for o in spaces]
    before = snapshot()
    q = np.ones((1, 1, 20, 16), np.float32)
    attention.attention_forward(q, q, q, causal=True)  # kernel with @triton.jit helpers
    for space, old, new in zip(spaces, before, snapshot()):
        changed = [k for k in old.keys() | new.keys() if old.get(k) is not new.get(k)]
        assert not changed, f"{space.__name__}: left patched: {changed[:5]}"


def test_make_kernel_both_kinds():
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction
    kernel = matmul._matmul_kernel
    assert isinstance(triton_host.make_kernel(kernel, interpret=True), InterpretedFunction)
    assert triton_host.make_kernel(kernel, interpret=True) is triton_host.make_kernel(kernel, True)
    assert isinstance(triton_host.make_kernel(kernel, interpret=False), JITFunction)


# --------------------------------------------------------------------------
# CUDA: the same checks, compiled, on CuPy arrays
# --------------------------------------------------------------------------

@pytest.mark.gpu
class TestOnCuda:
    def test_matmul(self):
        check_matmul(True, (512, 768), (768, 3072), BF16, "gelu_tanh", bias=True)
        check_matmul(True, (4, 300, 768), (768, 200), BF16, residual=True, transpose_b=True)
        check_matmul(True, (130, 70), (70, 90), np.float32, "silu", bias=True)
        check_matmul(True, (256, 256), (256, 256), np.float16, "relu", autotune=True)

    @pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
    @pytest.mark.parametrize("D", [64, 128])
    def test_attention(self, causal, D):
        check_attention(True, 2, 3, 300, 300, D, BF16, causal)
        check_attention(True, 2, 2, 256, 256, D, BF16, causal)  # blocks tile T: no masks
        check_attention(True, 1, 2, 129, 129, D, np.float32, causal, transposed=True)

    @pytest.mark.parametrize("eps", [0.0, 0.1], ids=["hard", "smoothed"])
    def test_cross_entropy(self, eps):
        check_cross_entropy(True, 256, 50304, BF16, eps)
        check_cross_entropy(True, 64, 1000, np.float32, eps, inplace=True)

    def test_interpreted_then_compiled(self):
        check_attention(False, 1, 1, 20, 20, 16, np.float32, causal=True)  # numpy: interpreted
        check_attention(True, 1, 1, 20, 20, 16, np.float32, causal=True)   # CuPy: compiled

    def test_runs_on_cupys_current_stream(self):
        import cupy
        with cupy.cuda.Stream(non_blocking=True):
            check_matmul(True, (64, 64), (64, 64), np.float32, "relu", bias=True)

    def test_second_launch_goes_direct_and_respecializes(self):
        # The first launch at a site goes through Triton and records the kernel; later ones with the
        # same specialization launch it directly; a pointer off 16-byte alignment is a new kernel.
        import cupy
        check_matmul(True, (64, 48), (48, 32), np.float32, "relu", bias=True)
        direct = dict(triton_host._COMPILED)
        assert any(k[0] is matmul._matmul_kernel for k in direct)
        check_matmul(True, (64, 48), (48, 32), np.float32, "relu", bias=True)
        assert triton_host._COMPILED.keys() == direct.keys()
        a = cupy.random.standard_normal(48 * 48 + 1, dtype=np.float32)[1:].reshape(48, 48)  # 4-byte aligned
        b = cupy.random.standard_normal((48, 48), dtype=np.float32)
        for _ in range(2):
            np.testing.assert_allclose(cupy.asnumpy(matmul.matmul(a, b)), cupy.asnumpy(a) @ cupy.asnumpy(b),
                                       rtol=1e-4, atol=1e-4)
        keys = [k for k in triton_host._COMPILED if k[0] is matmul._matmul_kernel]
        assert any((np.dtype(np.float32), False) in k[1] for k in keys)

    def test_needs_no_torch(self):
        # A fresh process where `import torch` fails, as on a machine without it.
        code = ("import sys; sys.modules['torch'] = None\n"
                "import numpy as np, cupy\n"
                "from tracegrad.runtime.templates.matmul import matmul\n"
                "a = cupy.asarray(np.eye(32, dtype=np.float32))\n"
                "assert float(abs(matmul(a, a) - a).max()) == 0\n"
                "print('ok')\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
