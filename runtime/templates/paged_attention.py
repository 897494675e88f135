"""Paged attention for decode: one new query token per row against a paged KV cache.

Semantics are the `paged_attention` op's (ir/ops/paged_attention.py): row b attends over its
`context_lens[b]` cached tokens, read through its block table, then over its own new key and value.

One program per (row, kv head) handles the kv head's group of query heads (grouped-query
attention: a group of `H // Hkv` rows, multi-head: one), so each cached key and value is read
once for the whole group. It walks the row's context in tiles of BLOCK_N tokens; the slot of
token j is `table[j // BLOCK_SIZE] * BLOCK_SIZE + j % BLOCK_SIZE`, looked up per token, so a tile
may span several cache blocks (block size 4) or part of one (block size 64) and nothing is gathered
into a contiguous context first. Scores go through an online softmax (FlashAttention, Dao et
al. 2022), seeded with the new token's score so the running max is finite from the start:

    m' = max(m, rowmax(S_j)),  l' = exp(m - m') l + rowsum(exp(S_j - m')),
    acc' = exp(m - m') acc + exp(S_j - m') V_j;     o = acc / l

Decode rows are few (one per query head), so the products are broadcast multiplies and sums in
fp32 rather than `tl.dot` (which wants 16 rows).

    from tracegrad.runtime.templates.paged_attention import paged_attention
    o = paged_attention(q, k, v, k_cache, v_cache, block_tables, context_lens, block_size=16)
"""
from __future__ import annotations

import math

import triton
import triton.language as tl

from ..devices import dtype_of, empty, is_cuda, strides_of
from ..triton_host import launch

LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)  # exp(x) == exp2(x * LOG2E)


@triton.jit
def _paged_decode(Q, K, V, KC, VC, TABLES, LENS, O, sm_scale,
                  stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh,
                  stride_cs, stride_ch, stride_tb, stride_ob, stride_oh,
                  REP: tl.constexpr, REP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
                  BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1).to(tl.int64)          # the kv head
    offs_r = tl.arange(0, REP_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    rows = offs_r < REP
    heads = g * REP + offs_r
    q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :], mask=rows[:, None],
                other=0.0).to(tl.float32)
    qk_scale = sm_scale * LOG2E
    # the new token first: the running max starts at its (finite) score and its weight exp(0) = 1
    k_new = tl.load(K + b * stride_kb + g * stride_kh + offs_d).to(tl.float32)
    v_new = tl.load(V + b * stride_vb + g * stride_vh + offs_d).to(tl.float32)
    m_i = tl.sum(q * k_new[None, :], 1) * qk_scale                              # [REP_PAD]
    l_i = tl.full([REP_PAD], 1.0, tl.float32)
    acc = tl.zeros([REP_PAD, HEAD_DIM], tl.float32) + v_new[None, :]
    n_ctx = tl.load(LENS + b)
    table = TABLES + b * stride_tb
    head = g * stride_ch + offs_d[None, :]
    for start in range(0, n_ctx, BLOCK_N):
        j = start + tl.arange(0, BLOCK_N)
        valid = j < n_ctx
        blk = tl.load(table + j // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
        slot = blk * BLOCK_SIZE + j % BLOCK_SIZE
        k = tl.load(KC + slot[:, None] * stride_cs + head, mask=valid[:, None], other=0.0).to(tl.float32)
        s = tl.sum(q[:, None, :] * k[None, :, :], 2) * qk_scale                 # [REP_PAD, BLOCK_N]
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(VC + slot[:, None] * stride_cs + head, mask=valid[:, None], other=0.0).to(tl.float32)
        acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v[None, :, :], 1)
        m_i = m_new
    o = acc / l_i[:, None]
    tl.store(O + b * stride_ob + heads[:, None] * stride_oh + offs_d[None, :], o.to(O.dtype.element_ty),
             mask=rows[:, None])


def pick_block_n(rep_pad: int, head_dim: int, cuda: bool) -> int:
    """Tokens a tile: the [REP_PAD, BLOCK_N, D] products kept to about 8K fp32 values (64 a thread
    at 4 warps) on CUDA; big tiles under the interpreter, where each tile costs a Python step."""
    budget = 8192 if cuda else 65536
    return max(16, min(128 if cuda else 256, triton.next_power_of_2(budget // (rep_pad * head_dim)) or 16))


def paged_attention(q, k, v, k_cache, v_cache, block_tables, context_lens, block_size: int = 16,
                    scale: float | None = None):
    """o [B, H, D] in q's dtype (see the module docstring). q [B, H, D]; k, v [B, Hkv, D]; caches
    [slots, Hkv, D]; block_tables i64[B, blocks]; context_lens i64[B]. Numpy arrays run under
    Triton's interpreter, CuPy arrays compiled on their GPU."""
    B, H, D = q.shape
    Hkv = k.shape[1]
    if D & (D - 1) or D < 8 or H % Hkv:
        raise ValueError(f"paged_attention: head dim {D} must be a power of two >= 8 and the {Hkv} kv heads "
                         f"must divide the {H} query heads")
    for name, x in (("q", q), ("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache)):
        if strides_of(x)[-1] != 1:
            raise ValueError(f"paged_attention: the head dim of {name} must be contiguous (stride 1)")
    if strides_of(k_cache) != strides_of(v_cache) or strides_of(block_tables)[1] != 1:
        raise ValueError("paged_attention: the two caches need one layout and the block table contiguous rows")
    rep = H // Hkv
    rep_pad = triton.next_power_of_2(rep)
    o = empty((B, H, D), dtype_of(q), like=q)
    if B == 0:
        return o
    sq, sk, sv, sc, st, so = (strides_of(x) for x in (q, k, v, k_cache, block_tables, o))
    cuda = is_cuda(q)
    meta = dict(REP=rep, REP_PAD=rep_pad, HEAD_DIM=D, BLOCK_SIZE=int(block_size),
                BLOCK_N=pick_block_n(rep_pad, D, cuda))
    if cuda:
        meta["num_warps"] = 4
    launch(_paged_decode, (B, Hkv), q, k, v, k_cache, v_cache, block_tables, context_lens, o,
           1.0 / math.sqrt(D) if scale is None else float(scale),
           sq[0], sq[1], sk[0], sk[1], sv[0], sv[1], sc[0], sc[1], st[0], so[0], so[1], **meta)
    return o
