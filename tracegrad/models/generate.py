"""Autoregressive sampling with a static-shape KV cache and a decode step compiled once.

    out = generate(model, idx, max_new_tokens=200, temperature=0.8, top_k=40)   # idx: i64[B, T]
    step = decode_step_fn(model); len(step.entries) == 1                          # traced once

The cache of each layer is a pair of buffers [B, heads, block_size, head_dim] allocated up front;
a step writes the new token's k and v at `pos` with `where(iota == pos, new, cache)` and attends
with a mask `iota <= pos`. `pos` is a tensor argument, so every token (prompt tokens included,
which are fed one at a time) runs the same compiled program: one trace per generation.

A model takes part by defining `new_cache(batch_size)` and `decode_step(idx [B, 1], pos, cache)
-> (logits [B, V], cache)`. When the sequence outgrows block_size, the cache is rebuilt from the
last `window` tokens (positions restart at 0, as nanoGPT's cropped context does).
"""
from __future__ import annotations

import numpy as np

import tracegrad as tg
import tracegrad.nn.functional as F


def cache_attend(q, k, v, pos, cache, n_rep: int = 1):
    """Attention of one new token. q: [B, H, 1, D]; k, v: [B, Hkv, 1, D]; cache: (K, V) each
    [B, Hkv, L, D] -> (y [B, H, 1, D], (K', V')) with k, v written at row `pos`."""
    kc, vc = cache
    L = kc.size(2)
    rows = tg.arange(L, device=q.device)
    slot = (rows == pos).view(1, 1, L, 1)
    kc = tg.where(slot, k.to(kc.dtype), kc)
    vc = tg.where(slot, v.to(vc.dtype), vc)
    keys, values = kc, vc
    if n_rep > 1:   # grouped-query attention: each kv head serves n_rep query heads
        B, H, _, D = kc.shape
        keys = kc[:, :, None].expand(B, H, n_rep, L, D).reshape(B, H * n_rep, L, D)
        values = vc[:, :, None].expand(B, H, n_rep, L, D).reshape(B, H * n_rep, L, D)
    visible = (rows <= pos).view(1, 1, 1, L)
    y = F.scaled_dot_product_attention(q, keys.to(q.dtype), values.to(q.dtype), attn_mask=visible)
    return y, (kc, vc)


def decode_step_fn(model):
    """The model's compiled decode step (made once per model, reused by every `generate`)."""
    step = model.__dict__.get("_tg_decode_step")
    if step is None:
        def decode(idx, pos, cache):
            return model.decode_step(idx, pos, cache)
        step = tg.compile(decode)
        model.__dict__["_tg_decode_step"] = step
    return step


def _filter(logits: np.ndarray, temperature: float, top_k, top_p) -> np.ndarray:
    """Probabilities after temperature, top-k and nucleus (top-p) filtering, rows summing to 1."""
    z = logits.astype(np.float64) / max(temperature, 1e-8)
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.sort(z, axis=-1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(p, order, -1)
        before = np.cumsum(sorted_p, -1) - sorted_p        # mass of strictly more likely tokens
        keep = np.zeros_like(p, dtype=bool)
        np.put_along_axis(keep, order, before < top_p, -1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(-1, keepdims=True)
    return p


def _pick(logits, temperature, top_k, top_p, greedy) -> np.ndarray:
    lg = logits.numpy()
    if greedy or temperature == 0:
        return lg.argmax(-1)
    probs = _filter(lg, temperature, top_k, top_p)
    return tg.multinomial(tg.tensor(probs.astype(np.float32)), 1).numpy()[:, 0]   # tracegrad's RNG


@tg.no_grad()
def generate(model, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, greedy: bool = False, use_cache: bool = True, window: int | None = None):
    """Continue each row of `idx` (i64[B, T]) by `max_new_tokens` tokens; returns i64[B, T + new]."""
    was_training = model.training
    model.eval()
    try:
        toks = np.asarray(idx.numpy(), dtype=np.int64)
        block = model.config.block_size
        if not use_cache:
            for _ in range(max_new_tokens):
                logits, _ = model(tg.tensor(toks[:, -block:]))
                toks = np.concatenate([toks, _pick(logits[:, -1, :], temperature, top_k, top_p, greedy)[:, None]], 1)
            return tg.tensor(toks)
        step = decode_step_fn(model)
        window = window or max(1, block // 2)
        B = toks.shape[0]
        cache, pos, logits = None, 0, None

        def feed(tokens):
            nonlocal cache, pos, logits
            for t in range(tokens.shape[1]):
                logits, cache = step(tg.tensor(tokens[:, t:t + 1]), tg.tensor(pos), cache)
                pos += 1

        def restart(context):
            nonlocal cache, pos
            cache, pos = model.new_cache(B), 0
            feed(context)

        restart(toks[:, -block:])
        for i in range(max_new_tokens):
            nxt = _pick(logits, temperature, top_k, top_p, greedy)[:, None]
            toks = np.concatenate([toks, nxt], 1)
            if i == max_new_tokens - 1:
                break
            if pos >= block:                     # the cache is full: rebuild it from the last `window` tokens
                restart(toks[:, -window:])
            else:
                feed(nxt)
        return tg.tensor(toks)
    finally:
        model.train(was_training)
