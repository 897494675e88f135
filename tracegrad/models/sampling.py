"""Token sampling as tensor ops, so it runs inside a compiled step and no logits leave the device.

    tok = sample_tokens(logits, temperature, top_k, top_p, seed, counter)    # every argument per row
    tok = sample_tokens(logits, ..., filtered=False)                          # no top-k / top-p pass

Each row has its own temperature (0: greedy), top-k (0: off), top-p (1: off), seed and counter
(tokens drawn so far). A draw is a Gumbel-max race: `argmax(z + g)` with `g = -log(-log u)` picks
token i with probability softmax(z)_i (Gumbel 1954; the "exponential race"). The uniforms `u` come
from a counter-based integer hash of (seed, counter, token id) made of int64 multiply/add/mod, so a
request's tokens depend on its seed alone, whatever batch it shares a step with.

Top-k and top-p need the k-th largest value and the nucleus threshold of each row; with no sort
primitive both are found by bisection (32 halvings of a per-row interval, each one compare and one
row sum): for top-k the largest t with count(z >= t) >= k, for top-p the largest t with
mass(p >= t) >= top_p. Ties at the threshold are all kept. The pass costs 64 row reductions, so
callers compile a `filtered=False` variant for batches that use neither.
"""
from __future__ import annotations

import tracegrad as tg

P = 2147483647                   # 2^31 - 1, the Mersenne prime of Park and Miller's MINSTD
_ROUNDS = (48271, 69621, 16807)
BISECT_STEPS = 32


def hash_uniform(seed, counter, vocab: int, device):
    """U(0, 1) f32[B, vocab] from i64 seed [B] (in [0, P)) and counter [B]; a pure function of
    (seed, counter, column). Products stay below 2^62, so int64 never wraps."""
    col = tg.arange(vocab, device=device).view(1, vocab)
    x = (seed.view(-1, 1) * 48271 + counter.view(-1, 1) * 39373 + 11) % P
    x = (x * 16807 + col * 69621 + 12345) % P
    for m in _ROUNDS:            # x^2 makes the map nonlinear; the multiplies spread the low bits
        x = (x * x + m) % P
        x = (x * m + 7) % P
    u = (x.float() + 0.5) * (1.0 / P)
    return u.clamp(max=1.0 - 2.0 ** -24)


def _top_k_floor(z, k):
    """Per row, the largest t (to bisection precision) with count(z >= t) >= k."""
    z = z.clamp(min=-1e30)        # masked (-inf) logits would make the midpoint NaN
    lo, hi = z.min(-1).values, z.max(-1).values + 1.0
    kf = k.float()
    for _ in range(BISECT_STEPS):
        mid = (lo + hi) * 0.5
        ok = (z >= mid.view(-1, 1)).float().sum(-1) >= kf
        lo, hi = tg.where(ok, mid, lo), tg.where(ok, hi, mid)
    return lo


def _top_p_floor(p, top_p):
    """Per row, the largest t with mass(p >= t) >= top_p: the probability of the last kept token."""
    lo = tg.zeros_like(top_p)
    hi = tg.ones_like(top_p) * 1.5
    for _ in range(BISECT_STEPS):
        mid = (lo + hi) * 0.5
        ok = tg.where(p >= mid.view(-1, 1), p, 0.0).sum(-1) >= top_p
        lo, hi = tg.where(ok, mid, lo), tg.where(ok, hi, mid)
    return lo


def sample_tokens(logits, temperature, top_k, top_p, seed, counter, filtered: bool = True):
    """Next token per row, i64[B], from logits [B, V] (any float dtype) and per-row settings:
    temperature f32[B] (0 = greedy), top_k i64[B] (0 = off), top_p f32[B] (>= 1 = off),
    seed i64[B] in [0, 2^31 - 1), counter i64[B]."""
    z = logits.float()
    B, V = z.shape
    greedy = z.argmax(-1)
    hot = temperature > 0.0
    z = z / tg.where(hot, temperature, 1.0).view(-1, 1)
    if filtered:
        k = tg.where((top_k > 0) & (top_k < V), top_k, V)
        z = tg.where(z >= _top_k_floor(z, k).view(-1, 1), z, float("-inf"))
        p = z.softmax(-1)
        tp = tg.where(top_p < 1.0, top_p, 2.0)        # 2: no threshold passes, every token kept
        z = tg.where(p >= _top_p_floor(p, tp).view(-1, 1), z, float("-inf"))
    u = hash_uniform(seed, counter, V, z.device)
    drawn = (z - (-u.log()).log()).argmax(-1)
    return tg.where(hot, drawn, greedy)
