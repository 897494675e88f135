"""The paged KV cache's bookkeeping: fixed-size blocks, a block table per sequence, prefix caching.

The cache holds `num_blocks` blocks of `block_size` token slots (slot = block * block_size +
offset); a sequence's block table lists its blocks in order, so the K and V of its token j live at
slot `table[j // block_size] * block_size + j % block_size` (Kwon et al. 2023, PagedAttention).

Prefix caching: a full block is keyed by a hash of its tokens chained with the previous block's
hash, so a key names the whole prefix. A new sequence whose leading full blocks match keys in the
table shares those blocks (reference counts) and skips their prefill. Freed blocks keep their key
and content until they are handed out again (least recently freed first), so a finished request's
prefix still hits. The block holding a prompt's last token is never taken from the cache: the
step must run at least that token to get logits, and a block is shared only once a step has
written it (two prompts with one prefix in the same prefill step each compute it).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from .sequence import Sequence


def block_hash(tokens: list[int], prefix: bytes) -> bytes:
    return hashlib.blake2b(np.asarray(tokens, dtype=np.int64).tobytes(), digest_size=16, key=prefix[:64]).digest()


class Block:
    __slots__ = ("block_id", "ref_count", "hash", "tokens", "ready")

    def __init__(self, block_id: int):
        self.block_id, self.ref_count, self.hash, self.tokens = block_id, 0, None, None
        self.ready = False                # its K and V are written (a step ran over it)


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = True):
        self.block_size, self.prefix_caching = block_size, prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        # NOTE: ordered, least recently freed first, and O(1) to take a cached block out of the middle
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.by_hash: dict[bytes, int] = {}
        self.hit_tokens = 0               # prefill tokens skipped thanks to prefix caching
        self.queried_tokens = 0           # prompt tokens looked up

    @property
    def num_free(self) -> int:
        return len(self.free)

    def _take(self, block_id: int | None = None) -> Block:
        if block_id is None:
            block_id, _ = self.free.popitem(last=False)
            b = self.blocks[block_id]
            if b.hash is not None and self.by_hash.get(b.hash) == block_id:
                del self.by_hash[b.hash]           # its old content is about to be overwritten
            b.hash = b.tokens = None
            b.ready = False
        else:
            del self.free[block_id]
            b = self.blocks[block_id]
        b.ref_count = 1
        return b

    def _register(self, b: Block, tokens: list[int], prefix: bytes) -> bytes:
        b.hash, b.tokens = block_hash(tokens, prefix), tuple(tokens)
        old = self.by_hash.get(b.hash)
        if old is None or not self.blocks[old].ready:       # keep a written twin over an unwritten one
            self.by_hash[b.hash] = b.block_id
        return b.hash

    def can_allocate(self, seq: Sequence) -> bool:
        return self.num_free >= seq.num_blocks(self.block_size)

    def allocate(self, seq: Sequence) -> None:
        """Blocks for all of seq's tokens, reusing cached full blocks of its prefix."""
        assert not seq.block_table
        bs, prefix, hit = self.block_size, b"", True
        seq.num_cached_tokens = 0
        for i in range(seq.num_blocks(bs)):
            tokens = seq.block(i, bs)
            full = len(tokens) == bs
            cached = None
            if hit and self.prefix_caching and full and (i + 1) * bs < len(seq):
                h = block_hash(tokens, prefix)
                cached = self.by_hash.get(h)
                b = self.blocks[cached] if cached is not None else None
                if b is not None and (b.tokens != tuple(tokens) or not b.ready):
                    cached = None                  # a hash collision, or a block this very step is still to write
            if cached is not None:
                b = self.blocks[cached]
                if b.ref_count == 0:
                    self._take(cached)
                else:
                    b.ref_count += 1
                seq.num_cached_tokens += bs
                prefix = b.hash
            else:
                hit = False
                b = self._take()
                if full and self.prefix_caching:
                    prefix = self._register(b, tokens, prefix)
            seq.block_table.append(b.block_id)
        seq.num_prefix_hit_tokens = seq.num_cached_tokens
        self.hit_tokens += seq.num_cached_tokens
        self.queried_tokens += len(seq)

    def deallocate(self, seq: Sequence) -> None:
        for block_id in reversed(seq.block_table):
            b = self.blocks[block_id]
            b.ref_count -= 1
            if b.ref_count == 0:
                self.free[block_id] = None
        seq.block_table = []
        seq.num_cached_tokens = 0

    def can_append(self, seq: Sequence) -> bool:
        """Whether the token the next decode step writes (its newest, maybe still in flight) has a
        slot or one can be had."""
        return len(seq.block_table) * self.block_size >= seq.total_len or self.num_free >= 1

    def append(self, seq: Sequence) -> None:
        """Before a decode step: a block for the token it writes, if that token starts one."""
        if len(seq.block_table) * self.block_size < seq.total_len:
            seq.block_table.append(self._take().block_id)

    def written(self, seqs) -> None:
        """After a step, once its tokens are known: the blocks holding each sequence's written
        tokens (all but the newest) hold their K and V, so later prefills may share them; a block
        that filled up is registered under the hash of its tokens. A step writes the tail of a
        table, so the walk starts from the end at the first block already ready and registered
        (a decode step visits one or two blocks, not all)."""
        bs = self.block_size
        for seq in seqs:
            table, n = seq.block_table, len(seq) - 1
            last = min(len(table), -(-n // bs))
            first = last
            while first > 0 and not self._settled(self.blocks[table[first - 1]], first * bs <= n):
                first -= 1
            for i in range(first, last):
                b = self.blocks[table[i]]
                if self.prefix_caching and b.hash is None and (i + 1) * bs <= n:
                    prefix = self.blocks[table[i - 1]].hash if i else b""
                    if prefix is not None:
                        self._register(b, seq.block(i, bs), prefix)
                b.ready = True
                if b.hash is not None:
                    cur = self.by_hash.get(b.hash)
                    if cur is None or not self.blocks[cur].ready:
                        self.by_hash[b.hash] = b.block_id

    def _settled(self, b: Block, full: bool) -> bool:
        """Ready, registered if it is a full block to share, and its hash names a ready block."""
        if not b.ready:
            return False
        if b.hash is None:
            return not (full and self.prefix_caching)
        cur = self.by_hash.get(b.hash)
        return cur is not None and self.blocks[cur].ready

    def slot(self, seq: Sequence, j: int) -> int:
        return seq.block_table[j // self.block_size] * self.block_size + j % self.block_size
