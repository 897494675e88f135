"""Matmul template with a fused elementwise epilogue.

    C = act(A @ B + bias) + residual          (each of bias/act/residual optional)

A is [M, K] or [Z, M, K], B is [K, N] or [Z, K, N] (a 2-D operand is shared by
every batch), bias is [N], residual is [M, N] or [Z, M, N]; C has A's dtype.
bf16/fp16/fp32 inputs, fp32 accumulation; any strides (so `x @ w.T` needs no
copy).  Under the interpreter (numpy arrays) and on CUDA (CuPy arrays).

    from tracegrad.runtime.templates.matmul import matmul
    y = matmul(x, w, bias=b, activation="gelu_tanh")      # x [4, 8], w [8, 16]
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..devices import dtype_of, empty, is_cuda, strides_of
from ..triton_host import cupy_do_bench, launch

ACTIVATIONS = ("none", "relu", "gelu_tanh", "silu")


@triton.jit
def activation_fn(x, ACTIVATION: tl.constexpr):
    """Elementwise activation on an fp32 block; ACTIVATION is one of ACTIVATIONS."""
    if ACTIVATION == "relu":
        x = tl.maximum(x, 0.0)
    elif ACTIVATION == "gelu_tanh":
        # 0.5 x (1 + tanh(u)) == x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3);
        # the sigmoid form needs no tanh and saturates cleanly at both ends.
        u2 = 1.5957691216057308 * (x + 0.044715 * x * x * x)
        x = x / (1.0 + tl.exp(-u2))
    elif ACTIVATION == "silu":
        x = x / (1.0 + tl.exp(-x))
    return x


# ---------------------------------------------------------------------------
# Kernel: one program computes one [BLOCK_M, BLOCK_N] tile of C for batch z:
#   acc = sum over k-blocks of A[m-block, k-block] @ B[k-block, n-block]  (fp32)
#   C[m, n] = act(acc + bias[n]) + residual[m, n], cast to C's dtype.
# Tiles are visited in groups of GROUP_M tile-rows so the B columns a group
# reads stay in L2 (the ordering of Triton's matmul tutorial).
# ---------------------------------------------------------------------------
@triton.jit
def _matmul_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr, res_ptr, M, N, K,
    stride_az, stride_am, stride_ak, stride_bz, stride_bk, stride_bn,
    stride_cz, stride_cm, stride_cn, stride_rz, stride_rm, stride_rn,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    z = tl.program_id(1).to(tl.int64)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_n
    first_m = (pid // group) * GROUP_M
    group_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % group_m
    pid_n = (pid % group) // group_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # NOTE: rows/cols past the edge wrap around (% M, % N) so the loads in the
    # K loop need a mask on K only; the store below drops the wrapped lanes.
    rows = offs_m % M
    cols = offs_n % N
    a_ptrs = a_ptr + z * stride_az + rows[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + z * stride_bz + offs_k[:, None] * stride_bk + cols[None, :] * stride_bn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols).to(tl.float32)[None, :]
    acc = activation_fn(acc, ACTIVATION)
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if HAS_RESIDUAL:
        r_ptrs = res_ptr + z * stride_rz + offs_m[:, None] * stride_rm + offs_n[None, :] * stride_rn
        acc += tl.load(r_ptrs, mask=mask, other=0.0).to(tl.float32)
    c_ptrs = c_ptr + z * stride_cz + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------
# Block sizes
# ---------------------------------------------------------------------------

def _config(block_m, block_n, block_k, num_warps, num_stages, group_m=8):
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=group_m,
                num_warps=num_warps, num_stages=num_stages)


def pick_blocks(M: int, N: int, K: int, itemsize: int, cuda: bool) -> dict:
    """Block sizes from a small table keyed by problem size (H100-tuned for
    CUDA; under the interpreter, big enough to keep the program count low)."""
    if not cuda:
        fit = lambda n: max(16, min(64, triton.next_power_of_2(n)))
        return _config(fit(M), fit(N), fit(K), 4, 1)
    block_k = 64 if itemsize <= 2 else 32   # fp32 tiles take twice the shared memory
    if M * N >= 2048 * 2048:
        return _config(128, 256, block_k, 8, 3)
    if M * N >= 512 * 512:
        return _config(128, 128, block_k, 4, 4)
    return _config(64, 64, block_k, 4, 4)


_AUTOTUNE_SPACE = [(128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (128, 128, 64, 4, 4),
                   (128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4),
                   (64, 64, 64, 4, 4), (128, 128, 32, 4, 4)]
_autotuned = None


def _autotuned_kernel():
    global _autotuned
    if _autotuned is None:
        configs = []
        for bm, bn, bk, warps, stages in _AUTOTUNE_SPACE:
            c = _config(bm, bn, bk, warps, stages)
            num_warps, num_stages = c.pop("num_warps"), c.pop("num_stages")
            configs.append(triton.Config(c, num_warps=num_warps, num_stages=num_stages))
        _autotuned = triton.autotune(configs, key=["M", "N", "K"], do_bench=cupy_do_bench)(_matmul_kernel)
    return _autotuned


# ---------------------------------------------------------------------------
# Host function
# ---------------------------------------------------------------------------

def matmul(a, b, bias=None, activation: str = "none", residual=None, *,
           allow_tf32: bool = False, autotune: bool = False, blocks: dict | None = None):
    """act(a @ b + bias) + residual as a new array of a's kind and dtype.

    fp32 inputs use IEEE fp32 products unless `allow_tf32`.  `autotune` (CUDA
    only) benchmarks a few block configs per (M, N, K) instead of the table;
    `blocks` overrides the table (keys of `pick_blocks`' result)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"matmul: activation {activation!r} is not one of {ACTIVATIONS}")
    if a.ndim not in (2, 3) or b.ndim not in (2, 3):
        raise ValueError(f"matmul: want 2-D or 3-D operands, got {list(a.shape)} @ {list(b.shape)}")
    dtype = dtype_of(a)
    if dtype_of(b) != dtype:
        raise TypeError(f"matmul: dtypes differ: {dtype} @ {dtype_of(b)}")
    M, K = a.shape[-2:]
    K2, N = b.shape[-2:]
    Z = max(a.shape[0] if a.ndim == 3 else 1, b.shape[0] if b.ndim == 3 else 1)
    if K != K2 or (a.ndim == 3 and a.shape[0] != Z) or (b.ndim == 3 and b.shape[0] != Z):
        raise ValueError(f"matmul: shapes {list(a.shape)} @ {list(b.shape)} do not match")
    batched = a.ndim == 3 or b.ndim == 3
    out_shape = (Z, M, N) if batched else (M, N)
    if bias is not None and tuple(bias.shape) != (N,):
        raise ValueError(f"matmul: bias has shape {list(bias.shape)}, want [{N}]")
    if residual is not None and tuple(residual.shape) not in (out_shape, (M, N)):
        raise ValueError(f"matmul: residual has shape {list(residual.shape)}, want {list(out_shape)}")

    c = empty(out_shape, dtype, like=a)
    s3 = lambda x: (0, *strides_of(x)) if x.ndim == 2 else strides_of(x)  # batch stride 0: shared
    cuda = is_cuda(a)
    precision = None if dtype.itemsize == 2 else ("tf32" if allow_tf32 else "ieee")
    args = (a, b, c, bias if bias is not None else a, residual if residual is not None else a,
            M, N, K, *s3(a), *s3(b), *s3(c), *(s3(residual) if residual is not None else (0, 0, 0)))
    flags = dict(HAS_BIAS=bias is not None, ACTIVATION=activation,
                 HAS_RESIDUAL=residual is not None, PRECISION=precision)
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]), Z)
    if autotune and cuda and blocks is None:
        launch(_autotuned_kernel(), grid, *args, **flags)
    else:
        launch(_matmul_kernel, grid, *args, **flags,
               **(blocks or pick_blocks(M, N, K, dtype.itemsize, cuda)))
    return c
