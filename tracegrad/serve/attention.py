"""The cache's side of attention in a serving step: `attend(q, k, v)` for the models' `step`.

The KV cache of a layer is a pair of buffers [slots, kv heads, D] (slot-major, as vLLM's); the new
tokens' K and V are not in it yet (the runner writes them after the step), so both forms attend
over [cached ++ new]:

- `prefill_attend`: T new tokens a row. The cached keys and values of row b are gathered through
  `ctx_slots[b, j]` (the slot of its token j) and attention runs over the gathered context with
  the mask `j < n_cached` for the cache and causal among the new tokens.
- `fresh_attend`: a prefill where no row has cached tokens: causal attention over the new ones.
- `decode_attend`: one new token a row, through the `paged_attention` op, which reads the cache
  through the block tables directly (a Triton template on the GPU; its decomposition gathers on
  the CPU).
"""
from __future__ import annotations

import tracegrad as tg
import tracegrad.nn.functional as F
from tracegrad.dispatch import apply


def prefill_attend(q, k, v, kc, vc, ctx_slots, n_cached):
    """q: [B, H, T, D]; k, v: [B, Hkv, T, D] new; kc, vc: [slots, Hkv, D] the cache; ctx_slots
    i64[B, C]; n_cached i64[B] -> y [B, H, T, D]."""
    B, Hkv, T, D = k.shape
    C = ctx_slots.shape[1]
    flat = ctx_slots.reshape(B * C)
    ck = kc.index_select(0, flat).view(B, C, Hkv, D).transpose(1, 2)
    cv = vc.index_select(0, flat).view(B, C, Hkv, D).transpose(1, 2)
    keys = tg.cat([ck, k.to(ck.dtype)], 2)
    values = tg.cat([cv, v.to(cv.dtype)], 2)
    old = (tg.arange(C, device=q.device).view(1, C) < n_cached.view(B, 1)).view(B, 1, 1, C).expand(B, 1, T, C)
    t = tg.arange(T, device=q.device)
    new = (t.view(1, T) <= t.view(T, 1)).view(1, 1, T, T).expand(B, 1, T, T)
    mask = tg.cat([old, new], 3)                                            # [B, 1, T, C + T]
    H = q.size(1)
    n_rep = H // Hkv
    if n_rep == 1:
        return F.scaled_dot_product_attention(q, keys.to(q.dtype), values.to(q.dtype), attn_mask=mask)
    # NOTE: grouped queries attend as n_rep * T rows of their kv head, so K and V are never repeated
    S = C + T
    qg = q.reshape(B, Hkv, n_rep * T, D)
    mask = mask.view(B, 1, 1, T, S).expand(B, 1, n_rep, T, S).reshape(B, 1, n_rep * T, S)
    y = F.scaled_dot_product_attention(qg, keys.to(q.dtype), values.to(q.dtype), attn_mask=mask)
    return y.reshape(B, H, T, D)


def fresh_attend(q, k, v):
    """A prefill with nothing cached in any row: causal attention among the new tokens alone, so the
    flash template serves it on the GPU (no mask, no gathered context). Padding columns come after
    a row's real tokens, which causality keeps them from seeing. q: [B, H, T, D]; k, v: [B, Hkv, T, D]."""
    B, Hkv, T, D = k.shape
    H = q.size(1)
    if H != Hkv:   # NOTE: causal rows cannot fold into the kv head as prefill_attend's masked ones do
        k = k[:, :, None].expand(B, Hkv, H // Hkv, T, D).reshape(B, H, T, D)
        v = v[:, :, None].expand(B, Hkv, H // Hkv, T, D).reshape(B, H, T, D)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def decode_attend(q, k, v, kc, vc, block_tables, context_lens, block_size: int):
    """q: [B, H, 1, D]; k, v: [B, Hkv, 1, D] new; kc, vc: [slots, Hkv, D]; block_tables i64[B, M];
    context_lens i64[B] (cached tokens a row) -> y [B, H, 1, D]."""
    B, H, _, D = q.shape
    Hkv = k.shape[1]
    y = apply("paged_attention", q.reshape(B, H, D), k.reshape(B, Hkv, D), v.reshape(B, Hkv, D), kc, vc,
              block_tables, context_lens, block_size=block_size, scale=None)
    return y.view(B, H, 1, D)
