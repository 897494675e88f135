"""Runs one engine step on the model: the paged KV cache, the compiled steps, the cache writes.

The cache of layer l is a pair of buffers [(num_blocks + 1) * block_size, kv_heads, head_dim] on the
model's device (slot-major, as vLLM's); the extra block is a sink that padding rows write to. The
steps run the same model code and kernels as training (through `model.step`) and sample on the
device; they return the sampled token of each row and the new K, V, which the runner writes into
the cache buffers in place at their slots (a row scatter per layer), so a step never copies a cache.

- Prefill (`serve_prefill`): B rows of T new tokens after `n_cached` cached ones, attention by
  gather (`attention.prefill_attend`). Rows, new tokens and cached blocks are bucketed to powers of
  two, so a few traces serve every batch. When no row has cached tokens (no prefix hit, no
  recompute), `serve_fresh` runs instead: causal attention over the new tokens alone
  (`attention.fresh_attend`), which the flash-attention template serves on the GPU.
- Decode (`serve_decode`): one new token a row, attention through the block tables
  (`attention.decode_attend`, the `paged_attention` op). Batches are padded to a bucket (1, 2, 4,
  ... up to max_num_seqs) and on CUDA the block table has a fixed width (max_model_len's blocks),
  so the step has one signature per bucket. Every input of a bucket lives in a buffer made once
  (`DecodeBuffers`) and written in place each step, so consecutive calls pass the same device
  buffers, as replaying a captured CUDA graph needs. Padding rows sample greedily from nothing
  (context 0, the sink block) and write their K, V to the sink slot.

`launch` starts a step and returns it `InFlight`: on CUDA nothing waits for the device until its
`tokens()` are asked for (they come back through a pinned buffer). A decode step may be launched
while the previous one runs: a row whose newest token is still on the device (`Sequence.ahead`)
takes it from that step's output with a gather on the device, so the host never waits in between.
"""
from __future__ import annotations

import warnings

import numpy as np

import tracegrad as tg
from tracegrad.models.sampling import sample_tokens
from tracegrad.runtime import devices

from .attention import decode_attend, fresh_attend, prefill_attend
from .sequence import Sequence

SAMPLING = (("temperature", np.float32, 0.0), ("top_k", np.int64, 0), ("top_p", np.float32, 1.0),
            ("seed", np.int64, 0), ("counter", np.int64, 0))


def bucket(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


class DecodeBuffers:
    """The inputs of the decode step for one batch bucket, made once on the device: token ids and
    positions [B, 1], block tables [B, M], context lengths [B], the sampling settings [B] and the
    slots the new K, V go to [B]. `fill` writes one step's values into them in place (host mirrors
    staged first, one copy per buffer)."""

    NAMES = ("idx", "positions", "block_tables", "context_lens") + tuple(n for n, _, _ in SAMPLING) + ("slots",)

    def __init__(self, B: int, max_blocks: int, sink_block: int, block_size: int, device: str):
        self.B, self.sink_block, self.block_size = B, sink_block, block_size
        shapes = dict(idx=(B, 1), positions=(B, 1), block_tables=(B, max_blocks))
        self.host = {n: np.zeros(shapes.get(n, (B,)), np.int64) for n in self.NAMES}
        for name, dt, _ in SAMPLING:
            self.host[name] = self.host[name].astype(dt)
        self._pad(0)
        self.rows: list = [None] * B          # (sequence, table width) each table row holds
        self.tensors = {n: _to_device(a, device) for n, a in self.host.items()}

    def _pad(self, start: int) -> None:
        """Rows from `start` on are padding: nothing cached, the sink block, greedy."""
        h = self.host
        for n in ("idx", "positions", "context_lens", "seed", "counter", "top_k", "temperature"):
            h[n][start:] = 0
        h["top_p"][start:] = 1.0
        h["block_tables"][start:] = self.sink_block
        h["slots"][start:] = self.sink_block * self.block_size

    def fill(self, seqs: list[Sequence], prev: InFlight | None = None) -> dict:
        """Write the step's inputs for `seqs`; the newest token of a row that is `ahead` comes from
        `prev`, the step in flight that samples it."""
        h, bs, n = self.host, self.block_size, len(seqs)
        # NOTE: column at a time, not row at a time: a Python loop over 256 rows cost ~4 ms a step
        ctx = np.fromiter((s.total_len - 1 for s in seqs), np.int64, n)  # cached tokens; token ctx is the new one
        h["idx"][:n, 0] = [s.token_ids[-1] for s in seqs]          # NOTE: stale where ahead: taken on the device
        h["positions"][:n, 0] = h["context_lens"][:n] = ctx
        self._fill_tables(seqs)
        h["slots"][:n] = h["block_tables"][np.arange(n), ctx // bs] * bs + ctx % bs
        for name, _, _ in SAMPLING[:3]:
            h[name][:n] = [getattr(s.params, name) for s in seqs]
        h["seed"][:n] = [s.seed for s in seqs]
        h["counter"][:n] = [s.num_completion_tokens + s.ahead for s in seqs]
        self._pad(n)
        for name, t in self.tensors.items():
            _write(t, h[name])
        if prev is not None:
            ahead = [(b, prev.row[id(s)]) for b, s in enumerate(seqs) if s.ahead]
            if ahead:
                _gather_rows(self.tensors["idx"], prev.tok, np.array(ahead, np.int64))
        return self.tensors

    def _fill_tables(self, seqs: list[Sequence]) -> None:
        """Table rows, rewritten only where they changed: a row that held the same sequence last
        step gains at most its newest block (tables change otherwise only when a sequence is
        prefilled, and `forget` drops those rows)."""
        tables, rows = self.host["block_tables"], self.rows
        for b, s in enumerate(seqs):
            table, prev = s.block_table, rows[b]
            w = len(table)
            if prev is not None and prev[0] is s and prev[1] == w:
                continue
            if prev is not None and prev[0] is s and prev[1] == w - 1:
                tables[b, w - 1] = table[-1]
            else:
                tables[b, :w] = table
                tables[b, w:] = self.sink_block
            rows[b] = (s, w)
        for b in range(len(seqs), self.B):
            rows[b] = None

    def forget(self, seqs) -> None:
        """These sequences' tables may have changed wholesale (a prefill: new, or recomputed)."""
        ids = {id(s) for s in seqs}
        self.rows = [None if r is not None and id(r[0]) in ids else r for r in self.rows]


class ModelRunner:
    def __init__(self, model, block_size: int, num_blocks: int, max_model_len: int, max_num_seqs: int = 256,
                 backend: str = "auto"):
        self.model, self.block_size, self.num_blocks = model, block_size, num_blocks
        self.max_model_len = max_model_len
        w = next(iter(model.parameters()))
        self.device, self.dtype = w.device, w.dtype
        self.layers, self.kv_heads, self.head_dim = model.kv_layout()
        shape = ((num_blocks + 1) * block_size, self.kv_heads, self.head_dim)
        # NOTE: one buffer per K and V holds every layer, so a step's new rows are written in one
        # scatter each, not one per layer (on the GPU, two launches after the graph instead of 2L)
        self.k_all, self.v_all = self._zeros((self.layers,) + shape), self._zeros((self.layers,) + shape)
        self.k_cache, self.v_cache = _layers(self.k_all), _layers(self.v_all)
        self.sink = num_blocks * block_size
        self.max_blocks = -(-max_model_len // block_size)
        self.decode_buckets = tuple(1 << i for i in range(bucket(max_num_seqs).bit_length()))
        self.decode_buffers: dict[tuple[int, int], DecodeBuffers] = {}     # (batch bucket, table width) ->
        self._pinned: dict[int, list[np.ndarray]] = {}     # rows -> the host buffers tokens come back to
        # NOTE: kept on the model, so engines over one model share traces (as decode_step_fn does)
        steps = model.__dict__.setdefault("_tg_serve_steps", {})
        makers = dict(prefill=lambda flt: self._prefill_step(flt, fresh=False),
                      fresh=lambda flt: self._prefill_step(flt, fresh=True), decode=self._decode_step)
        for kind, make in makers.items():
            for flt in (False, True):
                key = (kind, flt, backend, block_size)
                if key not in steps:
                    steps[key] = tg.compile(make(flt), backend=backend)
        self.steps = {(kind, flt): steps[(kind, flt, backend, block_size)] for kind in makers for flt in (False, True)}

    def _zeros(self, shape):
        t = tg.zeros(*shape, dtype=self.dtype, device=self.device)     # made on the device: no host copy
        a = _raw(t._data)
        assert not isinstance(a, np.ndarray) or a.flags.writeable     # the step writes the cache in place
        return t

    @staticmethod
    def cache_bytes_per_block(model, block_size: int) -> int:
        layers, heads, dim = model.kv_layout()
        return 2 * layers * heads * dim * block_size * next(iter(model.parameters())).element_size()

    def _prefill_step(self, filtered: bool, fresh: bool):
        """fresh: no row has cached tokens (ctx_slots, n_cached are then not read)."""
        model = self.model

        def serve_prefill(idx, positions, last, ctx_slots, n_cached, k_cache, v_cache, temperature, top_k, top_p,
                          seed, counter):
            new_k, new_v = [None] * len(k_cache), [None] * len(k_cache)

            def attend(i, q, k, v):
                new_k[i], new_v[i] = k.transpose(1, 2), v.transpose(1, 2)       # [B, T, Hkv, D]
                if fresh:
                    return fresh_attend(q, k, v)
                return prefill_attend(q, k, v, k_cache[i], v_cache[i], ctx_slots, n_cached)
            with tg.no_grad():
                logits = model.step(idx, positions, attend, last)
                tok = sample_tokens(logits, temperature, top_k, top_p, seed, counter, filtered=filtered)
            return tok, tg.stack(new_k), tg.stack(new_v)
        serve_prefill.__name__ = f"serve_{'fresh' if fresh else 'prefill'}{'_filtered' if filtered else ''}"
        return serve_prefill

    def _decode_step(self, filtered: bool):
        model, block_size = self.model, self.block_size

        def serve_decode(idx, positions, block_tables, context_lens, k_cache, v_cache, temperature, top_k, top_p,
                         seed, counter):
            new_k, new_v = [None] * len(k_cache), [None] * len(k_cache)

            def attend(i, q, k, v):
                new_k[i], new_v[i] = k.transpose(1, 2), v.transpose(1, 2)       # [B, 1, Hkv, D]
                return decode_attend(q, k, v, k_cache[i], v_cache[i], block_tables, context_lens, block_size)
            with tg.no_grad():     # NOTE: paged_attention has no VJP; under grad it would be decomposed
                last = tg.zeros(idx.shape[0], dtype=tg.long, device=idx.device)
                logits = model.step(idx, positions, attend, last)
                tok = sample_tokens(logits, temperature, top_k, top_p, seed, counter, filtered=filtered)
            return tok, tg.stack(new_k), tg.stack(new_v)
        serve_decode.__name__ = "serve_decode_filtered" if filtered else "serve_decode"
        return serve_decode

    # -- prefill --------------------------------------------------------------------------------
    def prepare_prefill(self, seqs: list[Sequence]) -> dict:
        """Host arrays for one prefill step (bucketed, padded)."""
        bs = self.block_size
        B = bucket(len(seqs))
        n_cached = [s.num_cached_tokens for s in seqs]
        n_new = [len(s) - c for s, c in zip(seqs, n_cached)]
        # NOTE: floors on the buckets (16 new tokens, 256 cached) trade a little padding for fewer traces
        T = min(max(16, bucket(max(n_new))), self.max_model_len)
        C = max(bucket(-(-max(max(n_cached), 1) // bs)) * bs, min(256, -(-self.max_model_len // bs) * bs))
        a = dict(idx=np.zeros((B, T), np.int64), positions=np.zeros((B, T), np.int64), last=np.zeros(B, np.int64),
                 ctx_slots=np.zeros((B, C), np.int64), n_cached=np.zeros(B, np.int64),
                 **{n: np.full(B, v, dt) for n, dt, v in SAMPLING})
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
        return dict(args=a, slots=slots.reshape(-1))

    # -- decode ---------------------------------------------------------------------------------
    def table_width(self, seqs: list[Sequence]) -> int:
        """Blocks in a decode step's block table: max_model_len's on CUDA (one signature per batch
        bucket); on the CPU, where there is no graph to replay and the op's decomposition gathers the
        whole width, the longest table's bucket (at least 256 tokens' worth), capped there too."""
        if self.device != "cpu":
            return self.max_blocks
        need = max((len(s.block_table) for s in seqs), default=1)
        return min(self.max_blocks, max(bucket(need), -(-256 // self.block_size)))

    def decode_inputs(self, seqs: list[Sequence], B: int | None = None, prev: InFlight | None = None) -> DecodeBuffers:
        """The bucket's buffers (bucket B, by default the one `seqs` need), filled for `seqs` (made
        at the bucket's first use); `prev` is the step in flight, if any."""
        key = (B or bucket(len(seqs)), self.table_width(seqs))
        buf = self.decode_buffers.get(key)
        if buf is None:
            buf = self.decode_buffers[key] = DecodeBuffers(*key, self.num_blocks, self.block_size, self.device)
        buf.fill(seqs, prev)
        return buf

    def warmup_decode(self, filtered: tuple[bool, ...] = (False,)) -> int:
        """Compile the decode step of every bucket now (rows of padding only: they write the sink),
        so serving never traces a decode step, and every bucket's buffers exist. Returns the steps run."""
        n = 0
        for B in self.decode_buckets:
            for flt in filtered:
                self._run_step("decode", flt, self.decode_inputs([], B).tensors)
                n += 1
        return n

    # -- one step -------------------------------------------------------------------------------
    def run(self, seqs: list[Sequence], is_prefill: bool) -> list[int]:
        """One step, waited for: the next token of each sequence."""
        return self.launch(seqs, is_prefill).tokens()

    def launch(self, seqs: list[Sequence], is_prefill: bool, prev: InFlight | None = None) -> InFlight:
        """Start one step (the cache holds all of `seqs`' tokens once it has run); `prev`: the decode
        step in flight, whose tokens rows that are `ahead` take."""
        filtered = any(s.params.filtered for s in seqs)
        if is_prefill:
            assert not any(s.ahead for s in seqs), "a prefill over a token still in flight"
            p = self.prepare_prefill(seqs)
            a = {k: _to_device(v, self.device) for k, v in p["args"].items()}
            a["slots"] = _to_device(p["slots"], self.device)
        else:
            a = self.decode_inputs(seqs, prev=prev).tensors
        kind = "decode"
        if is_prefill:
            for buf in self.decode_buffers.values():
                buf.forget(seqs)   # NOTE: with nothing cached, attention is causal over the new tokens: flash on the GPU
            kind = "prefill" if any(s.num_cached_tokens for s in seqs) else "fresh"
        tok = self._run_step(kind, filtered, a)
        for s in seqs:
            s.num_cached_tokens = s.total_len
        return InFlight(seqs, tok, self._pinned)

    def _run_step(self, kind: str, filtered: bool, a: dict):
        """The compiled step `kind` ("prefill", "fresh" or "decode") on the inputs `a`, then the new
        K, V written at a["slots"]; returns the tokens."""
        if kind != "decode":
            args = (a["idx"], a["positions"], a["last"], a["ctx_slots"], a["n_cached"])
        else:
            args = (a["idx"], a["positions"], a["block_tables"], a["context_lens"])
        with warnings.catch_warnings():     # NOTE: one trace per shape bucket is by design, not a retrace storm
            warnings.filterwarnings("ignore", message=".*was traced")
            tok, new_k, new_v = self.steps[(kind, filtered)](
                *args, self.k_cache, self.v_cache, *(a[n] for n, _, _ in SAMPLING))
        for cache, new in ((self.k_all, new_k), (self.v_all, new_v)):
            _write_rows(cache, a["slots"]._data, new)
        return tok


class InFlight:
    """A launched step: its sequences in row order and its sampled tokens, on their way to the host."""

    def __init__(self, seqs: list[Sequence], tok, pinned: dict):
        self.seqs, self.tok = seqs, tok
        self.ahead = False          # its sequences count its tokens as `ahead` until they are taken in
        self.row = {id(s): b for b, s in enumerate(seqs)}
        raw = _raw(tok._data)
        self._host, self._event = raw, None
        if isinstance(raw, np.ndarray):
            self._host = np.array(raw)                 # NOTE: its own copy, whatever reuses the step's buffers
        else:          # NOTE: a device array: copy out without waiting
            import cupy
            n = raw.shape[0]
            bufs = pinned.get(n)
            if bufs is None:   # NOTE: two per size: the step in flight's and the one launched after it
                bufs = pinned[n] = [_pinned_empty(n, raw.dtype) for _ in range(2)]
            bufs.reverse()
            self._host = bufs[0]
            raw.get(out=self._host, blocking=False)
            self._event = cupy.cuda.Event(block=False, disable_timing=True)
            self._event.record()

    def tokens(self) -> list[int]:
        if self._event is not None:
            self._event.synchronize()
        return self._host[:len(self.seqs)].tolist()


def _pinned_empty(n: int, dtype) -> np.ndarray:
    import cupy
    mem = cupy.cuda.alloc_pinned_memory(n * np.dtype(dtype).itemsize)
    return np.frombuffer(mem, dtype, n)


def _gather_rows(idx, tok, pairs: np.ndarray) -> None:
    """idx[b, 0] = tok[r] for each (b, r) in pairs, on idx's device."""
    dst, src = _raw(idx._data), _raw(tok._data)
    if isinstance(dst, np.ndarray):
        dst[pairs[:, 0], 0] = src[pairs[:, 1]]
        return
    import cupy
    n = len(pairs)
    if (pairs[:, 0] == pairs[:, 1]).all() and pairs[-1, 0] == n - 1:     # NOTE: the same rows: one slice copy
        dst[:n, 0] = src[:n]
    else:
        p = cupy.asarray(pairs)
        dst[p[:, 0], 0] = src[p[:, 1]]


def _to_device(array: np.ndarray, device: str):
    t = tg.tensor(array)
    return t.to(device) if device != "cpu" else t


def _raw(x):
    return x.array if isinstance(x, devices.TypedArray) else x


def _write(t, host: np.ndarray) -> None:
    """t's buffer = host, in place (the same device memory before and after)."""
    a = _raw(t._data)
    if isinstance(a, np.ndarray) and type(a) is np.ndarray:
        a[...] = host
    elif hasattr(a, "set"):
        a.set(host)                  # CuPy: a host-to-device copy into the existing allocation
    else:
        a[...] = host


def _write_rows(cache, slots, new) -> None:
    """cache[:, slots] = new rows of every layer, in place on the cache's own buffer (numpy or CuPy)."""
    dst, src = _raw(cache._data), _raw(new._data)
    dst[:, _raw(slots)] = src.reshape((dst.shape[0], -1) + tuple(dst.shape[2:]))


def _layers(stacked) -> list:
    """The layers of a [L, ...] tensor as L tensors over its buffer (views: no copy)."""
    a = stacked._data
    raw = _raw(a)
    typ = stacked._type.with_(shape=tuple(stacked.shape[1:]))
    wrap = (lambda r: devices.TypedArray(r, a.dtype)) if isinstance(a, devices.TypedArray) else (lambda r: r)
    return [tg.Tensor._from_array(wrap(raw[i]), typ) for i in range(raw.shape[0])]
