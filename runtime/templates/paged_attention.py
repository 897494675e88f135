"""Paged attention for decode: one new query token per row against a paged KV cache.

Semantics are the `paged_attention` op's (ir/ops/paged_attention.py): row b attends over its
`context_lens[b]` cached tokens, read through its block table, then over its own new key and value.

One program per (row, kv head, context part) handles the kv head's group of query heads
(grouped-query attention: a group of `H // Hkv` rows, multi-head: one), so each cached key and
value is read once for the whole group. It walks its part of the row's context in tiles of BLOCK_N
tokens; the slot of token j is `table[j // BLOCK_SIZE] * BLOCK_SIZE + j % BLOCK_SIZE`, looked up
per token, so a tile may span several cache blocks and nothing is gathered into a contiguous
context first. Scores go through an online softmax (FlashAttention, Dao et al. 2022):

    m' = max(m, rowmax(S_j)),  l' = exp(m - m') l + rowsum(exp(S_j - m')),
    acc' = exp(m - m') acc + exp(S_j - m') V_j;     o = acc / l

Part 0 starts from the new token's score (a finite running max, weight exp(0) = 1); the others
from nothing. With one part the program writes o itself. With several (flash decoding: few rows
leave most of the GPU idle, and a long context is a long chain of dependent loads), each writes
its (m, l, acc) and a second kernel merges the parts of each head:

    M = max_s m_s,   o = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s

The group's query heads are padded to 16 rows so the two products of a tile are tensor-core dots
(`tl.dot` wants 16 rows); heads narrower than 16 use broadcast multiplies and sums instead.

    from tracegrad.runtime.templates.paged_attention import paged_attention
    o = paged_attention(q, k, v, k_cache, v_cache, block_tables, context_lens, block_size=16)
"""
from __future__ import annotations

import functools
import math

import triton
import triton.language as tl

from ..devices import dtype_of, empty, is_cuda, strides_of
from ..triton_host import launch

LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)  # exp(x) == exp2(x * LOG2E)


@triton.jit
def _paged_decode(Q, K, V, KC, VC, TABLES, LENS, O, PART_M, PART_L, PART_ACC, sm_scale,
                  stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh,
                  stride_cs, stride_ch, stride_tb, stride_ob, stride_oh, n_heads,
                  PART: tl.constexpr, SPLITS: tl.constexpr, REP: tl.constexpr, ROWS: tl.constexpr,
                  HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
                  USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1).to(tl.int64)          # the kv head
    part = tl.program_id(2)
    offs_r = tl.arange(0, ROWS)
    offs_d = tl.arange(0, HEAD_DIM)
    rows = offs_r < REP
    heads = g * REP + offs_r
    q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :], mask=rows[:, None], other=0.0)
    qk_scale = sm_scale * LOG2E
    if part == 0:      # the new token first: the running max starts at its (finite) score, its weight is 1
        k_new = tl.load(K + b * stride_kb + g * stride_kh + offs_d).to(tl.float32)
        v_new = tl.load(V + b * stride_vb + g * stride_vh + offs_d).to(tl.float32)
        m_i = tl.sum(q.to(tl.float32) * k_new[None, :], 1) * qk_scale                # [ROWS]
        l_i = tl.full([ROWS], 1.0, tl.float32)
        acc = tl.zeros([ROWS, HEAD_DIM], tl.float32) + v_new[None, :]
    else:
        m_i = tl.full([ROWS], float("-inf"), tl.float32)
        l_i = tl.zeros([ROWS], tl.float32)
        acc = tl.zeros([ROWS, HEAD_DIM], tl.float32)
    n_ctx = tl.load(LENS + b)
    lo = part * PART
    hi = tl.minimum(lo + PART, n_ctx)
    table = TABLES + b * stride_tb
    head = g * stride_ch + offs_d[None, :]
    for start in range(lo, hi, BLOCK_N):
        j = start + tl.arange(0, BLOCK_N)
        valid = j < hi
        blk = tl.load(table + j // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
        slot = blk * BLOCK_SIZE + j % BLOCK_SIZE
        k = tl.load(KC + slot[:, None] * stride_cs + head, mask=valid[:, None], other=0.0)
        if USE_DOT:
            s = tl.dot(q, tl.trans(k.to(q.dtype)), input_precision=PRECISION) * qk_scale   # [ROWS, BLOCK_N]
        else:
            s = tl.sum(q.to(tl.float32)[:, None, :] * k.to(tl.float32)[None, :, :], 2) * qk_scale
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(VC + slot[:, None] * stride_cs + head, mask=valid[:, None], other=0.0)
        if USE_DOT:
            pv = tl.dot(p.to(q.dtype), v.to(q.dtype), input_precision=PRECISION)
        else:
            pv = tl.sum(p[:, :, None] * v.to(tl.float32)[None, :, :], 1)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
    if SPLITS == 1:
        o = acc / l_i[:, None]
        tl.store(O + b * stride_ob + heads[:, None] * stride_oh + offs_d[None, :], o.to(O.dtype.element_ty),
                 mask=rows[:, None])
    else:
        at = (b * n_heads + heads) * SPLITS + part                  # partials are [B, H, SPLITS(, D)]
        tl.store(PART_M + at, m_i, mask=rows)
        tl.store(PART_L + at, l_i, mask=rows)
        tl.store(PART_ACC + at[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=rows[:, None])


@triton.jit
def _merge_parts(PART_M, PART_L, PART_ACC, LENS, O, stride_ob, stride_oh, n_heads,
                 PART: tl.constexpr, SPLITS: tl.constexpr, SPLITS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    offs_s = tl.arange(0, SPLITS_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    n_ctx = tl.load(LENS + b)
    live = (offs_s < SPLITS) & ((offs_s == 0) | (offs_s * PART < n_ctx))     # parts past the context hold nothing
    at = (b * n_heads + h) * SPLITS + offs_s
    m = tl.load(PART_M + at, mask=live, other=float("-inf"))
    l_s = tl.load(PART_L + at, mask=live, other=0.0)
    w = tl.exp2(m - tl.max(m, 0))             # part 0 always holds the new token: the max is finite
    acc = tl.load(PART_ACC + at[:, None] * HEAD_DIM + offs_d[None, :], mask=live[:, None], other=0.0)
    o = tl.sum(w[:, None] * acc, 0) / tl.sum(w * l_s, 0)
    tl.store(O + b * stride_ob + h * stride_oh + offs_d, o.to(O.dtype.element_ty))


def plan(B: int, Hkv: int, rep: int, D: int, capacity: int, cuda: bool, sm_count: int = 132,
         splits: int | None = None) -> dict:
    """Launch constants: query rows a program, tokens a tile, and the context cut into SPLITS parts
    of PART tokens (a multiple of the tile). On CUDA the parts are enough for about four programs an
    SM when B x Hkv alone is too few; `splits` forces a count (tests)."""
    use_dot = D >= 16
    rows = max(16, triton.next_power_of_2(rep)) if use_dot else triton.next_power_of_2(rep)
    if use_dot:
        block_n = 64 if cuda else 128
    else:      # NOTE: [ROWS, BLOCK_N, D] products kept to about 8K fp32 values (64 a thread at 4 warps)
        block_n = max(16, min(128 if cuda else 256, triton.next_power_of_2((8192 if cuda else 65536) // (rows * D))))
    tiles = max(1, -(-capacity // block_n))
    if splits is None:
        splits = min(tiles, -(-4 * sm_count // (B * Hkv))) if cuda else 1
    splits = max(1, min(int(splits), tiles))
    part = -(-tiles // splits) * block_n
    return dict(ROWS=rows, BLOCK_N=block_n, USE_DOT=use_dot, PART=part, SPLITS=-(-capacity // part) if capacity else 1)


def paged_attention(q, k, v, k_cache, v_cache, block_tables, context_lens, block_size: int = 16,
                    scale: float | None = None, splits: int | None = None):
    """o [B, H, D] in q's dtype (see the module docstring). q [B, H, D]; k, v [B, Hkv, D]; caches
    [slots, Hkv, D]; block_tables i64[B, blocks]; context_lens i64[B]. Numpy arrays run under
    Triton's interpreter, CuPy arrays compiled on their GPU. `splits` forces the number of context
    parts (default: by the batch and the GPU)."""
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
    o = empty((B, H, D), dtype_of(q), like=q)
    if B == 0:
        return o
    cuda = is_cuda(q)
    rep = H // Hkv
    meta = plan(B, Hkv, rep, D, block_tables.shape[1] * int(block_size), cuda, _sm_count(q) if cuda else 132, splits)
    parts = meta["SPLITS"]
    part_m = part_l = part_acc = o          # NOTE: one part writes o itself; the pointers go unused
    if parts > 1:
        part_m, part_l = (empty((B, H, parts), "float32", like=q) for _ in range(2))
        part_acc = empty((B, H, parts, D), "float32", like=q)
    meta.update(REP=rep, HEAD_DIM=D, BLOCK_SIZE=int(block_size),
                PRECISION="ieee" if str(dtype_of(q)) == "float32" else "tf32")
    if cuda:
        meta["num_warps"] = 4
    sq, sk, sv, sc, st, so = (strides_of(x) for x in (q, k, v, k_cache, block_tables, o))
    launch(_paged_decode, (B, Hkv, parts), q, k, v, k_cache, v_cache, block_tables, context_lens, o,
           part_m, part_l, part_acc, 1.0 / math.sqrt(D) if scale is None else float(scale),
           sq[0], sq[1], sk[0], sk[1], sv[0], sv[1], sc[0], sc[1], st[0], so[0], so[1], H, **meta)
    if parts > 1:
        launch(_merge_parts, (B, H), part_m, part_l, part_acc, context_lens, o, so[0], so[1], H,
               PART=meta["PART"], SPLITS=parts, SPLITS_PAD=triton.next_power_of_2(parts), HEAD_DIM=D,
               **({"num_warps": 4} if cuda else {}))
    return o


def _sm_count(x) -> int:
    return _sm_count_of(x.device.id)


@functools.lru_cache(maxsize=None)
def _sm_count_of(device_id: int) -> int:
    import cupy
    return cupy.cuda.Device(device_id).attributes["MultiProcessorCount"]
