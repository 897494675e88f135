"""`paged_attention`: one decode step's attention over a paged KV cache, as a composite.

Each row b brings one new query token q[b] (all heads), its own new key and value (k[b], v[b], the
kv heads), and `context_lens[b]` earlier tokens whose keys and values lie in the cache buffers
`k_cache`, `v_cache` [slots, kv heads, D]. Token j of row b is at slot
`block_tables[b, j // block_size] * block_size + j % block_size` (vLLM's layout). Query head h
reads kv head `h // (H // Hkv)` (grouped-query attention; H == Hkv is multi-head):

    o[b, h] = softmax(scale q[b, h] [K_b; k[b, g]]^T) [V_b; v[b, g]],    g = h // (H // Hkv)

where K_b, V_b are row b's `context_lens[b]` cached tokens in order. The new token is attended
to but not written: the caller puts it in the cache afterwards. Table entries past a row's
context are never read by the kernel, but the decomposition gathers them, so they must name
real blocks (the engine fills them with its sink block).

The decomposition (numpy's lowering, and autodiff's) gathers the whole table's slots and runs
masked attention; the Triton template (`runtime/templates/paged_attention.py`) reads the cache
through the table block by block and never forms the gathered context.
"""
from __future__ import annotations

from ..types import int64
from .registry import decomposition, defop, fail

ATTRS = dict(block_size=16, scale=None)


def _infer(ts, block_size, scale):
    q, k, v, kc, vc, table, lens = ts
    if q.ndim != 3 or k.ndim != 3 or kc.ndim != 3:
        fail("paged_attention", ts, "expected q [B, H, D], k and v [B, Hkv, D], caches [slots, Hkv, D]")
    B, H, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[2] != D or H % k.shape[1]:
        fail("paged_attention", ts, f"k and v must be [{B}, Hkv, {D}] with Hkv dividing {H}")
    if kc.shape != vc.shape or kc.shape[1:] != k.shape[1:]:
        fail("paged_attention", ts, f"the caches must be [slots, {k.shape[1]}, {D}], both alike")
    if table.dtype != int64 or lens.dtype != int64 or table.ndim != 2 or table.shape[0] != B or lens.shape != (B,):
        fail("paged_attention", ts, f"block_tables must be i64[{B}, blocks] and context_lens i64[{B}]")
    if kc.shape[0] % block_size:
        fail("paged_attention", ts, f"the caches' {kc.shape[0]} slots are not whole blocks of {block_size}")
    if len({q.dtype, k.dtype, v.dtype}) > 1 or kc.dtype != vc.dtype:
        fail("paged_attention", ts, "q, k, v need one dtype, and the two caches one dtype")
    return q


defop("paged_attention", "composite", _infer, 7, ATTRS,
      doc="(q, k, v, k_cache, v_cache, block_tables, context_lens) -> o [B, H, D]")


@decomposition("paged_attention")
def _paged_attention(b, q, k, v, kc, vc, table, lens, block_size=16, scale=None):
    B, H, D = b.shape(q)
    Hkv, M = b.shape(k)[1], b.shape(table)[1]
    C = M * block_size
    dev = b.type_of(q).device
    j = b.iota(shape=(B, C), axis=1, device=dev)
    blk = b.gather(table, b.div(j, block_size), axis=1)                       # [B, C] block of token j
    slots = b.reshape_to(b.add(b.mul(blk, block_size), b.mod(j, block_size)), (B * C,))
    keys, values = [], []
    for cache, new, out in ((kc, k, keys), (vc, v, values)):
        ctx = b.permute(b.reshape_to(b.take(cache, slots, axis=0), (B, C, Hkv, D)), dims=(0, 2, 1, 3))
        out.append(b.concat(b.cast_to(ctx, b.dtype(q)), b.reshape_to(new, (B, Hkv, 1, D)), axis=2))
    col = b.iota(shape=(B, C + 1), axis=1, device=dev)
    keep = b.logical_or(b.lt(col, b.reshape_to(lens, (B, 1))), b.eq(col, C))
    mask = b.reshape_to(keep, (B, 1, 1, C + 1))
    qg = b.reshape_to(q, (B, Hkv, H // Hkv, D))             # a kv head's query heads attend as its rows
    o, _ = b.scaled_dot_product_attention(qg, keys[0], values[0], mask, is_causal=False, scale=scale)
    return b.reshape_to(o, (B, H, D))

