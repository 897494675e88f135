"""Autoregressive generation: the prompt prefilled in one pass, then one compiled decode step per
token, with the KV cache, the positions and the sampling all on the model's device.

    out = generate(model, idx, max_new_tokens=200, temperature=0.8, top_k=40)   # idx: i64[B, T]
    out = generate(model, idx, 50, greedy=True)                                 # argmax decoding
    step = decode_step_fn(model); len(step.entries) == 2                         # prefill + decode

The cache of each layer is a pair of buffers [B, kv_heads, block_size, head_dim] allocated on the
model's device; a step writes its T new keys at rows pos .. pos+T-1 with a `where` over the rows
and attends with the mask `row <= pos + t`. `pos` is a device tensor the step returns advanced, so
the prompt (T = its length) and every later token (T = 1) run two compiled programs and the loop
never waits for the host: sampling (`models/sampling.py`) happens inside the step, and the tokens
come back to the host once, at the end. When a sequence outgrows block_size, the cache is rebuilt
from the last `window` tokens (positions restart at 0, as nanoGPT's cropped context does).

A model takes part by defining `kv_layout() -> (layers, kv_heads, head_dim)`, `config.block_size`
and `step(idx [B, T], positions [B, T], attend, last [B]) -> logits [B, V]`, where
`attend(layer, q, k, v) -> y` is the cache's side of attention (GPT, Llama in tracegrad/models).
"""
from __future__ import annotations

import numpy as np

import tracegrad as tg
import tracegrad.nn.functional as F

from .sampling import P, sample_tokens


def repeat_kv(x, n_rep: int):
    """[B, Hkv, L, D] -> [B, Hkv * n_rep, L, D]: each kv head serves n_rep query heads (GQA)."""
    if n_rep == 1:
        return x
    B, H, L, D = x.shape
    return x[:, :, None].expand(B, H, n_rep, L, D).reshape(B, H * n_rep, L, D)


def cache_attend(q, k, v, pos, cache):
    """Attention of T new tokens at rows pos .. pos+T-1. q: [B, H, T, D]; k, v: [B, Hkv, T, D];
    cache: (K, V) each [B, Hkv, L, D] -> (y [B, H, T, D], (K', V'))."""
    kc, vc = cache
    T, L = q.size(2), kc.size(2)
    rows = tg.arange(L, device=q.device)
    rel = rows - pos                                  # where row r takes new token r - pos
    slot = ((rel >= 0) & (rel < T)).view(1, 1, L, 1)
    take = rel.clamp(0, T - 1)
    kc = tg.where(slot, k.to(kc.dtype).index_select(2, take), kc)
    vc = tg.where(slot, v.to(vc.dtype).index_select(2, take), vc)
    n_rep = q.size(1) // kc.size(1)
    visible = rows.view(1, L) <= (tg.arange(T, device=q.device) + pos).view(T, 1)
    y = F.scaled_dot_product_attention(q, repeat_kv(kc, n_rep).to(q.dtype), repeat_kv(vc, n_rep).to(q.dtype),
                                       attn_mask=visible.view(1, 1, T, L))
    return y, (kc, vc)


def model_device(model) -> str:
    return next(iter(model.parameters())).device


def new_cache(model, batch_size: int) -> list:
    """Zeroed (K, V) per layer, [B, kv_heads, block_size, head_dim], in the weights' dtype and device."""
    layers, heads, dim = model.kv_layout()
    w = next(iter(model.parameters()))
    shape = (batch_size, heads, model.config.block_size, dim)
    return [(tg.zeros(*shape, dtype=w.dtype, device=w.device), tg.zeros(*shape, dtype=w.dtype, device=w.device))
            for _ in range(layers)]


def decode_step_fn(model, filtered: bool = True):
    """The model's compiled step (made once per model and sampling variant, reused by every call):
    (idx [B, T], pos, cache, temperature, top_k, top_p, seed, counter) -> (next tokens [B],
    pos + T, cache, counter + 1)."""
    key = "_tg_decode_step" + ("_filtered" if filtered else "")
    step = model.__dict__.get(key)
    if step is None:
        def decode(idx, pos, cache, temperature, top_k, top_p, seed, counter):
            B, T = idx.shape
            positions = (tg.arange(T, device=idx.device) + pos).view(1, T).expand(B, T)
            new = list(cache)

            def attend(i, q, k, v):
                y, new[i] = cache_attend(q, k, v, pos, cache[i])
                return y
            last = tg.full((B,), T - 1, dtype=tg.long, device=idx.device)
            logits = model.step(idx, positions, attend, last)
            tok = sample_tokens(logits, temperature, top_k, top_p, seed, counter, filtered=filtered)
            return tok, pos + T, new, counter + 1
        step = tg.compile(decode)
        model.__dict__[key] = step
    return step


def row_seeds(batch: int, seed: int | None = None) -> np.ndarray:
    """Per-row sampling seeds in [0, P): from `seed`, else from tracegrad's generator (so
    `tg.manual_seed` makes generation repeatable)."""
    if seed is None:
        seed = int(tg.randint(0, P - 1, (1,)).item())
    return (seed + 1_000_003 * np.arange(batch, dtype=np.int64)) % P


def _settings(B, device, temperature, top_k, top_p, greedy, seed):
    t = 0.0 if greedy else float(temperature)
    return (tg.full((B,), t, device=device), tg.full((B,), int(top_k or 0), dtype=tg.long, device=device),
            tg.full((B,), 1.0 if top_p is None else float(top_p), device=device),
            tg.tensor(row_seeds(B, seed)).to(device))


@tg.no_grad()
def generate(model, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, greedy: bool = False, use_cache: bool = True,
             window: int | None = None, seed: int | None = None):
    """Continue each row of `idx` (i64[B, T]) by `max_new_tokens` tokens; returns i64[B, T + new]
    on the model's device. temperature 0 or `greedy` is argmax; `seed` fixes the draws (row b uses
    seed + 1000003 b, as `LLM.generate` does with `SamplingParams(seed=...)`); `use_cache=False`
    recomputes the whole context for every token (the reference the cache must match)."""
    was_training = model.training
    model.eval()
    try:
        dev = model_device(model)
        toks = idx.to(dev)
        B = toks.shape[0]
        block = model.config.block_size
        temp, tk, tp, seeds = _settings(B, dev, temperature, top_k, top_p, greedy, seed)
        filtered = bool(top_k) or (top_p is not None and top_p < 1.0)
        counter = tg.zeros(B, dtype=tg.long, device=dev)
        if not use_cache:
            for _ in range(max_new_tokens):
                ctx = toks[:, -block:]
                T = ctx.shape[1]
                positions = tg.arange(T, device=dev).view(1, T).expand(B, T)
                logits = model.step(ctx, positions, _full_attention, tg.full((B,), T - 1, dtype=tg.long, device=dev))
                nxt = sample_tokens(logits, temp, tk, tp, seeds, counter, filtered=filtered)
                toks, counter = tg.cat([toks, nxt.view(B, 1)], 1), counter + 1
            return toks
        step = decode_step_fn(model, filtered)
        window = window or max(1, block // 2)
        out = [toks]
        cache, pos, n_ctx = new_cache(model, B), tg.zeros((), dtype=tg.long, device=dev), min(toks.shape[1], block)
        nxt, pos, cache, counter = step(toks[:, -block:], pos, cache, temp, tk, tp, seeds, counter)
        for i in range(max_new_tokens - 1):
            out.append(nxt.view(B, 1))
            if n_ctx >= block:       # the cache is full: rebuild it from the last `window` tokens
                ctx = tg.cat(out, 1)[:, -window:]
                cache, pos, n_ctx = new_cache(model, B), tg.zeros((), dtype=tg.long, device=dev), window
                nxt, pos, cache, counter = step(ctx, pos, cache, temp, tk, tp, seeds, counter)
            else:
                nxt, pos, cache, counter = step(nxt.view(B, 1), pos, cache, temp, tk, tp, seeds, counter)
                n_ctx += 1
        if max_new_tokens > 0:
            out.append(nxt.view(B, 1))
        return tg.cat(out, 1)
    finally:
        model.train(was_training)


def _full_attention(i, q, k, v):
    """Causal attention over the whole context (no cache): the reference path."""
    n_rep = q.size(1) // k.size(1)
    return F.scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), is_causal=True)
