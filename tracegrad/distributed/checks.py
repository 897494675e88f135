"""The ranks of a dp group must run the same collectives in the same order; a rank that traced
another shape or took another branch would otherwise wait forever, or reduce the wrong buffers.
Before a compiled step first runs, its ranks compare a hash of their collectives (op, shapes,
dtypes, group sizes), one small all_gather, and a mismatch raises on every rank, naming them."""
from __future__ import annotations

import hashlib

import numpy as np


def collective_signature(graph) -> list[tuple]:
    return [(n.op, tuple(v.type.shape for v in n.inputs), tuple(str(v.type.dtype) for v in n.inputs),
             len(n.attrs.get("group", ()))) for n in graph.nodes if n.op in
            ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "send", "recv")]


def check_same_collectives(graph, comm, group: tuple, title: str) -> None:
    sig = collective_signature(graph)
    digest = int.from_bytes(hashlib.sha256(repr(sig).encode()).digest()[:7], "little")
    hashes = comm.all_gather(comm.buffer(np.array([digest, len(sig)], np.int64)), 0, tuple(group))
    hashes = hashes.get() if hasattr(hashes, "get") else np.asarray(hashes)
    hashes = hashes.reshape(len(group), 2)
    if (hashes[:, 0] != hashes[0, 0]).any():
        by = {}
        for r, (h, n) in zip(group, hashes.tolist()):
            by.setdefault((h, n), []).append(r)
        groups = "; ".join(f"ranks {rs}: {n} collectives (hash {h:x})" for (h, n), rs in by.items())
        raise RuntimeError(f"{title}: the ranks of dp group {tuple(group)} compiled different graphs ({groups}); "
                           "every rank must trace the same step (same shapes, same branches): a different batch "
                           "shape or a data-dependent branch on one rank does this")
