"""Flash attention template: forward and backward, causal or not.

Follows FlashAttention-2 (Dao, 2023, arXiv:2307.08691), Algorithms 1 and 2.
q, k, v are [B, H, T, D] (D = 16, 32, 64 or 128; any strides with the last
one 1), bf16/fp16/fp32, products accumulated in fp32.  With S = scale * Q K^T
(masked to -inf above the diagonal when causal, top-left aligned like
`torch.nn.functional.scaled_dot_product_attention(is_causal=True)`):

    forward:   P = softmax(S),  O = P V,  L = logsumexp(S)        (per row)
    backward:  dV = P^T dO,  dP = dO V^T,  delta = rowsum(dO * O),
               dS = P * (dP - delta),  dQ = scale dS K,  dK = scale dS^T Q

    from tracegrad.runtime.templates.attention import attention_forward, attention_backward
    o, lse = attention_forward(q, k, v, causal=True)
    dq, dk, dv = attention_backward(q, k, v, o, lse, do, causal=True)
"""
from __future__ import annotations

import functools
import math

import numpy as np
import triton
import triton.language as tl

from ..devices import dtype_of, empty, is_cuda, map_array, strides_of
from ..triton_host import launch

LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)  # exp(x) == exp2(x * LOG2E)


@triton.jit
def _load(ptrs, mask, EVEN: tl.constexpr):
    """Load a block, masked only where the sequence does not fill it (EVEN=False)."""
    if EVEN:
        return tl.load(ptrs)
    return tl.load(ptrs, mask=mask, other=0.0)


# ---------------------------------------------------------------------------
# Forward (FA-2 Algorithm 1).  One program owns BLOCK_M query rows of one
# (batch, head) and streams K, V blocks through an online softmax:
#   m' = max(m, rowmax(S_j)),  l' = exp(m - m') l + rowsum(exp(S_j - m')),
#   acc' = exp(m - m') acc + exp(S_j - m') V_j;   at the end O = acc / l,
#   L = m + log(l).  Work is done in base 2 (exp2 with scale * log2 e).
# ---------------------------------------------------------------------------
@triton.jit
def _fwd_blocks(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d,
                qk_scale, lo, hi, T_K, MASK_DIAG: tl.constexpr, EVEN_N: tl.constexpr,
                BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        kt = _load(k_base + cols[None, :] * stride_kt + offs_d[:, None], cols[None, :] < T_K, EVEN_N)
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
        if MASK_DIAG:
            s = tl.where(offs_m[:, None] >= cols[None, :], s, float("-inf"))
        if not EVEN_N:
            s = tl.where(cols[None, :] < T_K, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load(v_base + cols[:, None] * stride_vt + offs_d[None, :], cols[:, None] < T_K, EVEN_N)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(Q, K, V, O, L, sm_scale,
              stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
              stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot,
              H, T_Q, T_K, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
              BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr, PRECISION: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=offs_m[:, None] < T_Q, other=0.0)
    qk_scale = sm_scale * LOG2E
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    # Causal: key blocks wholly left of this row block need no mask; only the
    # ones from `diag` (a multiple of BLOCK_N) to the diagonal do.
    diag = T_K
    if CAUSAL:
        diag = tl.minimum(start_m // BLOCK_N * BLOCK_N, T_K)
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d,
                                qk_scale, 0, diag, T_K, False, EVEN_N, BLOCK_N, PRECISION)
    if CAUSAL:
        acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d,
                                    qk_scale, diag, tl.minimum(start_m + BLOCK_M, T_K), T_K, True,
                                    EVEN_N, BLOCK_N, PRECISION)
    rows = offs_m < T_Q
    o_ptrs = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :]
    tl.store(o_ptrs, (acc / l_i[:, None]).to(O.dtype.element_ty), mask=rows[:, None])
    tl.store(L + bh * T_Q + offs_m, (m_i + tl.log2(l_i)) / LOG2E, mask=rows)


# ---------------------------------------------------------------------------
# Backward (FA-2 Algorithm 2), as three kernels:
#   _attn_bwd_delta: delta = rowsum(dO * O)
#   _attn_bwd_dkdv:  one program per key block, loops over query blocks,
#                    recomputes P^T = exp(scale K Q^T - L) and accumulates dK, dV
#   _attn_bwd_dq:    one program per query block, loops over key blocks for dQ
# Two kernels instead of one with atomic dQ adds: no fp32 dQ scratch buffer,
# and the result is deterministic.  Query rows past T_Q load as zeros (dO = 0,
# delta = 0), so they add nothing to dK and dV; key rows past T_K load as
# zeros and add nothing to dQ.
# ---------------------------------------------------------------------------
@triton.jit
def _attn_bwd_delta(O, DO, Delta, stride_ob, stride_oh, stride_ot, stride_db, stride_dh, stride_dt,
                    H, T_Q, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    rows = offs_m[:, None] < T_Q
    o = tl.load(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
                mask=rows, other=0.0).to(tl.float32)
    do = tl.load(DO + b * stride_db + h * stride_dh + offs_m[:, None] * stride_dt + offs_d[None, :],
                 mask=rows, other=0.0).to(tl.float32)
    tl.store(Delta + bh * T_Q + offs_m, tl.sum(o * do, 1), mask=offs_m < T_Q)


@triton.jit
def _dkdv_blocks(dk, dv, k, v, q_base, do_base, L, Delta, stride_qt, stride_dt, offs_n, offs_d,
                 qk_scale, lo, hi, T_Q, MASK_DIAG: tl.constexpr, EVEN_M: tl.constexpr,
                 BLOCK_M: tl.constexpr, PRECISION: tl.constexpr):
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        qt = _load(q_base + rows[None, :] * stride_qt + offs_d[:, None], rows[None, :] < T_Q, EVEN_M)
        lse = _load(L + rows, rows < T_Q, EVEN_M)
        pt = tl.exp2(tl.dot(k, qt, input_precision=PRECISION) * qk_scale - lse[None, :] * LOG2E)
        if MASK_DIAG:
            pt = tl.where(rows[None, :] >= offs_n[:, None], pt, 0.0)
        do = _load(do_base + rows[:, None] * stride_dt + offs_d[None, :], rows[:, None] < T_Q, EVEN_M)
        dv += tl.dot(pt.to(do.dtype), do, input_precision=PRECISION)
        delta = _load(Delta + rows, rows < T_Q, EVEN_M)
        dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(qt.dtype), tl.trans(qt), input_precision=PRECISION)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, L, Delta, DK, DV, sm_scale,
                   stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                   stride_vb, stride_vh, stride_vt, stride_db, stride_dh, stride_dt,
                   stride_gb, stride_gh, stride_gt, H, T_Q, T_K, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_M: tl.constexpr, PRECISION: tl.constexpr):
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    cols = offs_n[:, None] < T_K
    k = tl.load(K + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kt + offs_d[None, :],
                mask=cols, other=0.0)
    v = tl.load(V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vt + offs_d[None, :],
                mask=cols, other=0.0)
    q_base = Q + b * stride_qb + h * stride_qh
    do_base = DO + b * stride_db + h * stride_dh
    L, Delta = L + bh * T_Q, Delta + bh * T_Q
    qk_scale = sm_scale * LOG2E
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    # Causal: queries before start_n see none of these keys, the query blocks
    # up to diag_end cross the diagonal and need the mask, later ones see all.
    diag_end = 0
    if CAUSAL:
        diag_end = start_n + tl.cdiv(BLOCK_N, BLOCK_M) * BLOCK_M
        dk, dv = _dkdv_blocks(dk, dv, k, v, q_base, do_base, L, Delta, stride_qt, stride_dt, offs_n, offs_d,
                              qk_scale, start_n, tl.minimum(diag_end, T_Q), T_Q, True, EVEN_M, BLOCK_M,
                              PRECISION)
    dk, dv = _dkdv_blocks(dk, dv, k, v, q_base, do_base, L, Delta, stride_qt, stride_dt, offs_n, offs_d,
                          qk_scale, diag_end, T_Q, T_Q, False, EVEN_M, BLOCK_M, PRECISION)
    g_ptrs = b * stride_gb + h * stride_gh + offs_n[:, None] * stride_gt + offs_d[None, :]  # dK, dV
    tl.store(DK + g_ptrs, (dk * sm_scale).to(DK.dtype.element_ty), mask=cols)
    tl.store(DV + g_ptrs, dv.to(DV.dtype.element_ty), mask=cols)


@triton.jit
def _dq_blocks(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d,
               qk_scale, lo, hi, T_K, MASK_DIAG: tl.constexpr, EVEN_N: tl.constexpr,
               BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        kt = _load(k_base + cols[None, :] * stride_kt + offs_d[:, None], cols[None, :] < T_K, EVEN_N)
        vt = _load(v_base + cols[None, :] * stride_vt + offs_d[:, None], cols[None, :] < T_K, EVEN_N)
        p = tl.exp2(tl.dot(q, kt, input_precision=PRECISION) * qk_scale - lse[:, None] * LOG2E)
        if MASK_DIAG:
            p = tl.where(offs_m[:, None] >= cols[None, :], p, 0.0)
        dp = tl.dot(do, vt, input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision=PRECISION)
    return dq


@triton.jit
def _attn_bwd_dq(Q, K, V, DO, L, Delta, DQ, sm_scale,
                 stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                 stride_vb, stride_vh, stride_vt, stride_db, stride_dh, stride_dt,
                 stride_gb, stride_gh, stride_gt, H, T_Q, T_K, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr, PRECISION: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    rows = offs_m < T_Q
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=rows[:, None], other=0.0)
    do = tl.load(DO + b * stride_db + h * stride_dh + offs_m[:, None] * stride_dt + offs_d[None, :],
                 mask=rows[:, None], other=0.0)
    lse = tl.load(L + bh * T_Q + offs_m, mask=rows, other=0.0)
    delta = tl.load(Delta + bh * T_Q + offs_m, mask=rows, other=0.0)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    qk_scale = sm_scale * LOG2E
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    diag = T_K  # as in the forward
    if CAUSAL:
        diag = tl.minimum(start_m // BLOCK_N * BLOCK_N, T_K)
    dq = _dq_blocks(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d,
                    qk_scale, 0, diag, T_K, False, EVEN_N, BLOCK_N, PRECISION)
    if CAUSAL:
        dq = _dq_blocks(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d,
                        qk_scale, diag, tl.minimum(start_m + BLOCK_M, T_K), T_K, True, EVEN_N, BLOCK_N,
                        PRECISION)
    dq_ptrs = DQ + b * stride_gb + h * stride_gh + offs_m[:, None] * stride_gt + offs_d[None, :]
    tl.store(dq_ptrs, (dq * sm_scale).to(DQ.dtype.element_ty), mask=rows[:, None])


# ---------------------------------------------------------------------------
# Host functions
# ---------------------------------------------------------------------------

class _Plan:
    """What a call's shapes, dtype and options fix: block sizes, grids, the scale (cached)."""

    def __init__(self, q_shape, k_shape, v_shape, dtypes, causal, scale, blocks, cuda):
        if len(q_shape) != 4 or k_shape != v_shape or q_shape[:2] != k_shape[:2] or q_shape[3] != k_shape[3]:
            raise ValueError(f"attention: want q [B, H, Tq, D], k and v [B, H, Tk, D]; "
                             f"got {list(q_shape)}, {list(k_shape)}, {list(v_shape)}")
        if q_shape[3] not in (16, 32, 64, 128):
            raise ValueError(f"attention: head dim {q_shape[3]} is not one of 16, 32, 64, 128")
        if len(set(dtypes)) != 1:
            raise TypeError(f"attention: dtypes differ: {', '.join(map(str, dtypes))}")
        B, H, T_Q, D = q_shape
        T_K, dtype = k_shape[2], dtypes[0]
        self.H, self.T_Q, self.T_K, self.dtype = H, T_Q, T_K, dtype
        self.scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
        meta = dict(CAUSAL=causal, HEAD_DIM=D, PRECISION=None if dtype.itemsize == 2 else "ieee")
        self.meta = {}
        for kind in ("fwd", "dkdv", "dq"):   # block sizes, and whether they tile T exactly (no masks)
            b = dict(blocks or pick_blocks(kind, D, dtype.itemsize, cuda))
            even = dict(EVEN_M=T_Q % b["BLOCK_M"] == 0) if kind == "dkdv" else dict(EVEN_N=T_K % b["BLOCK_N"] == 0)
            self.meta[kind] = {**meta, **b, **even}
        self.grid = dict(fwd=(triton.cdiv(T_Q, self.meta["fwd"]["BLOCK_M"]), B * H),
                         dkdv=(triton.cdiv(T_K, self.meta["dkdv"]["BLOCK_N"]), B * H),
                         dq=(triton.cdiv(T_Q, self.meta["dq"]["BLOCK_M"]), B * H),
                         delta=(triton.cdiv(T_Q, 64), B * H))


@functools.lru_cache(maxsize=256)
def _cached_plan(*key) -> _Plan:
    return _Plan(*key)


def _plan(q, k, v, causal, scale, blocks) -> _Plan:
    return _cached_plan(tuple(q.shape), tuple(k.shape), tuple(v.shape), (dtype_of(q), dtype_of(k), dtype_of(v)),
                        bool(causal), scale, tuple(sorted(blocks.items())) if blocks else None, is_cuda(q))


def _strides_bht(*xs):
    out = []
    for x in xs:
        s = strides_of(x)
        if s[3] != 1:
            raise ValueError("attention: the head dim of q, k, v, o and do must be contiguous (stride 1)")
        out += s[:3]
    return out


def pick_blocks(kind: str, head_dim: int, itemsize: int, cuda: bool) -> dict:
    """Block sizes for kind "fwd", "dkdv" or "dq" (H100-tuned on CUDA)."""
    if not cuda:
        return dict(BLOCK_M=16, BLOCK_N=16)
    wide = head_dim >= 128 or itemsize == 4
    warps = 8 if wide else 4
    if kind == "fwd":
        return dict(BLOCK_M=128, BLOCK_N=32 if itemsize == 4 else 64, num_warps=warps, num_stages=3)
    if kind == "dkdv":
        return dict(BLOCK_M=32 if wide else 64, BLOCK_N=64, num_warps=warps, num_stages=2 if wide else 3)
    return dict(BLOCK_M=64, BLOCK_N=32, num_warps=warps, num_stages=2 if wide else 3)


def attention_forward(q, k, v, causal: bool = False, scale: float | None = None, blocks: dict | None = None):
    """O [B, H, Tq, D] in q's dtype (a view of a [B, Tq, H, D] buffer) and L [B, H, Tq] fp32
    (natural-log logsumexp of the scaled, masked scores).  scale defaults to 1/sqrt(D)."""
    p = _plan(q, k, v, causal, scale, blocks)
    B, H, T, D = q.shape
    # NOTE: O lies as [B, Tq, H, D] (a [B, H, Tq, D] view of it): the heads merge back into the model
    # width (`y.transpose(1, 2).reshape(B, T, C)`) without a copy, as PyTorch's flash attention does
    o = map_array(lambda a: a.transpose(0, 2, 1, 3), empty((B, T, H, D), p.dtype, like=q))
    lse = empty(q.shape[:3], np.float32, like=q)
    launch(_attn_fwd, p.grid["fwd"], q, k, v, o, lse, p.scale, *_strides_bht(q, k, v, o), p.H, p.T_Q, p.T_K,
           **p.meta["fwd"])
    return o, lse


def attention_backward(q, k, v, o, lse, do, causal: bool = False, scale: float | None = None,
                       delta=None, blocks: dict | None = None):
    """dQ, dK, dV (dtypes of q, k, v) from the forward's O and L and the
    output gradient dO.  `delta` = rowsum(dO * O) fp32 [B, H, Tq] is computed
    when not given."""
    p = _plan(q, k, v, causal, scale, blocks)
    qkv_do = _strides_bht(q, k, v, do)
    if delta is None:
        delta = empty(q.shape[:3], np.float32, like=q)
        launch(_attn_bwd_delta, p.grid["delta"], o, do, delta, *_strides_bht(o, do), p.H, p.T_Q,
               HEAD_DIM=q.shape[3], BLOCK_M=64)
    dq = empty(q.shape, p.dtype, like=q)
    dk = empty(k.shape, p.dtype, like=q)
    dv = empty(v.shape, p.dtype, like=q)  # fresh and contiguous: dk's strides
    launch(_attn_bwd_dkdv, p.grid["dkdv"], q, k, v, do, lse, delta, dk, dv, p.scale, *qkv_do, *_strides_bht(dk),
           p.H, p.T_Q, p.T_K, **p.meta["dkdv"])
    launch(_attn_bwd_dq, p.grid["dq"], q, k, v, do, lse, delta, dq, p.scale, *qkv_do, *_strides_bht(dq),
           p.H, p.T_Q, p.T_K, **p.meta["dq"])
    return dq, dk, dv
