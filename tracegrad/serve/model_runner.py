"""Runs one engine step on the model: the paged KV cache, the compiled step, the cache writes.

The cache of layer l is a pair of buffers [(num_blocks + 1) * block_size, kv_heads, head_dim] on the
model's device (slot-major, as vLLM's); the extra block is a sink that padding rows write to. One
compiled program serves prefill and decode (the same model code and kernels as training, through
`model.step`): each of B rows brings T new tokens after `n_cached` tokens already in the cache.

Paged attention by gather: the step reads the cached keys and values of row b through its block
table (`ctx_slots[b, j]` = the slot of token j, made on the host from the table), so attention runs
over [cached ++ new] with the mask `j < n_cached` for the cache and causal among the new tokens.
The step returns the sampled token of each row and the new K, V; the runner writes those into the
cache buffers in place at their slots (a row scatter per layer), so the step never copies a cache.

Shapes are bucketed to powers of two (rows B, new tokens T, cached blocks) so a few traces serve
every batch; padding rows sample greedily and write to the sink, padding columns are masked.
"""
from __future__ import annotations

import warnings

import numpy as np

import tracegrad as tg
import tracegrad.nn.functional as F
from tracegrad.models.sampling import sample_tokens
from tracegrad.runtime import devices

from .sequence import Sequence


def bucket(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def paged_attend(q, k, v, kc, vc, ctx_slots, n_cached):
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


class ModelRunner:
    def __init__(self, model, block_size: int, num_blocks: int, max_model_len: int):
        self.model, self.block_size, self.num_blocks = model, block_size, num_blocks
        self.max_model_len = max_model_len
        w = next(iter(model.parameters()))
        self.device, self.dtype = w.device, w.dtype
        self.layers, self.kv_heads, self.head_dim = model.kv_layout()
        shape = ((num_blocks + 1) * block_size, self.kv_heads, self.head_dim)
        self.k_cache = [self._zeros(shape) for _ in range(self.layers)]
        self.v_cache = [self._zeros(shape) for _ in range(self.layers)]
        self.sink = num_blocks * block_size
        # NOTE: kept on the model, so engines over one model share traces (as decode_step_fn does)
        self.steps = model.__dict__.setdefault("_tg_serve_steps", {flt: tg.compile(self._step(flt))
                                                                    for flt in (False, True)})

    def _zeros(self, shape):
        t = tg.zeros(*shape, dtype=self.dtype, device=self.device)     # made on the device: no host copy
        a = _raw(t._data)
        assert not isinstance(a, np.ndarray) or a.flags.writeable     # the step writes the cache in place
        return t

    @staticmethod
    def cache_bytes_per_block(model, block_size: int) -> int:
        layers, heads, dim = model.kv_layout()
        return 2 * layers * heads * dim * block_size * next(iter(model.parameters())).element_size()

    def _step(self, filtered: bool):
        model = self.model

        def serve_step(idx, positions, last, ctx_slots, n_cached, k_cache, v_cache, temperature, top_k, top_p,
                       seed, counter):
            new_k, new_v = [None] * len(k_cache), [None] * len(k_cache)

            def attend(i, q, k, v):
                new_k[i], new_v[i] = k.transpose(1, 2), v.transpose(1, 2)       # [B, T, Hkv, D]
                return paged_attend(q, k, v, k_cache[i], v_cache[i], ctx_slots, n_cached)
            logits = model.step(idx, positions, attend, last)
            tok = sample_tokens(logits, temperature, top_k, top_p, seed, counter, filtered=filtered)
            return tok, new_k, new_v
        serve_step.__name__ = "serve_step_filtered" if filtered else "serve_step"
        return serve_step

    def prepare(self, seqs: list[Sequence], is_prefill: bool) -> dict:
        """Host arrays for one step (bucketed, padded)."""
        bs = self.block_size
        B = bucket(len(seqs))
        n_cached = [s.num_cached_tokens if is_prefill else len(s) - 1 for s in seqs]
        n_new = [len(s) - c for s, c in zip(seqs, n_cached)]
        # NOTE: floors on the buckets (16 new tokens, 256 cached) trade a little padding for fewer traces
        T = min(max(16, bucket(max(n_new))), self.max_model_len) if is_prefill else 1
        C = max(bucket(-(-max(max(n_cached), 1) // bs)) * bs, min(256, -(-self.max_model_len // bs) * bs))
        a = dict(idx=np.zeros((B, T), np.int64), positions=np.zeros((B, T), np.int64), last=np.zeros(B, np.int64),
                 ctx_slots=np.zeros((B, C), np.int64), n_cached=np.zeros(B, np.int64),
                 temperature=np.zeros(B, np.float32), top_k=np.zeros(B, np.int64), top_p=np.ones(B, np.float32),
                 seed=np.zeros(B, np.int64), counter=np.zeros(B, np.int64))
        slots = np.full((B, T), self.sink, np.int64)
        for b, (s, c, n) in enumerate(zip(seqs, n_cached, n_new)):
            table = np.asarray(s.block_table, np.int64)
            j = np.arange(c + n)
            where = table[j // bs] * bs + j % bs
            a["idx"][b, :n] = s.token_ids[c:]
            a["positions"][b] = np.minimum(c + np.arange(T), self.max_model_len - 1)
            a["last"][b], a["n_cached"][b] = n - 1, c
            a["ctx_slots"][b, :c] = where[:c]
            slots[b, :n] = where[c:]
            p = s.params
            a["temperature"][b], a["top_k"][b], a["top_p"][b] = p.temperature, p.top_k, p.top_p
            a["seed"][b], a["counter"][b] = s.seed, s.num_completion_tokens
        return dict(args=a, slots=slots.reshape(-1), filtered=any(s.params.filtered for s in seqs))

    def run(self, seqs: list[Sequence], is_prefill: bool) -> list[int]:
        """One step: the next token of each sequence (the cache now holds all their tokens)."""
        p = self.prepare(seqs, is_prefill)
        a = {k: self._put(v) for k, v in p["args"].items()}
        with warnings.catch_warnings():     # NOTE: one trace per shape bucket is by design, not a retrace storm
            warnings.filterwarnings("ignore", message=".*was traced")
            tok, new_k, new_v = self.steps[p["filtered"]](
                a["idx"], a["positions"], a["last"], a["ctx_slots"], a["n_cached"], self.k_cache, self.v_cache,
                a["temperature"], a["top_k"], a["top_p"], a["seed"], a["counter"])
        slots = self._put(p["slots"])._data
        for cache, new in zip(self.k_cache + self.v_cache, new_k + new_v):
            _write_rows(cache, slots, new)
        for s in seqs:
            s.num_cached_tokens = len(s)
        return [int(t) for t in tok.numpy()[:len(seqs)]]

    def _put(self, array: np.ndarray):
        t = tg.tensor(array)
        return t.to(self.device) if self.device != "cpu" else t


def _raw(x):
    return x.array if isinstance(x, devices.TypedArray) else x


def _write_rows(cache, slots, new) -> None:
    """cache[slots] = new rows, in place on the cache's own buffer (numpy or CuPy)."""
    dst, src = _raw(cache._data), _raw(new._data)
    dst[_raw(slots)] = src.reshape((-1,) + tuple(dst.shape[1:]))
