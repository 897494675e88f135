"""Gradient buckets: the data-parallel all_reduces of many gradients become a few all_reduces of
flat buckets, as PyTorch's DDP does: each bucket is the concat of its gradients flattened, one
all_reduce, then slices reshaped back. Fewer, larger messages; the same values.

A bucket collects `all_reduce` nodes (sum or mean) of one op, group, dtype and device, and is
emitted as soon as it is complete: (1) when it holds `bucket_bytes`, (2) right after the last
all_reduce of its kind in the graph (so the last bucket goes out as soon as its last gradient is
computed, while the rest of the backward still runs), or (3) just before the first node that
reads one of its results. An all_reduce only ever moves later, after its input exists, so the
order of everything else is kept. Gradients are ready in reverse order of the parameters (the
backward runs the forward in reverse), so buckets fill in that order, as DDP's do.
"""
from __future__ import annotations

from ...builder import GraphBuilder
from ...graph import Graph, Node, Value

BUCKET_BYTES = 25 << 20     # DDP's default bucket_cap_mb


def _key(n: Node):
    if n.op != "all_reduce" or n.attrs["op"] not in ("sum", "mean"):
        return None
    t = n.inputs[0].type
    return n.attrs["op"], n.attrs["group"], t.dtype, t.device


def bucket_all_reduces(graph: Graph, bucket_bytes: int = BUCKET_BYTES) -> Graph:
    if sum(_key(n) is not None for n in graph.nodes) < 2:
        return graph
    b = GraphBuilder.continuing(graph, phase="backward")
    env: dict[Value, Value] = {}
    pending: dict[tuple, list[Node]] = {}
    last = {_key(n): n for n in graph.nodes if _key(n) is not None}    # the last all_reduce of each kind

    def flush(key):
        members = pending.pop(key)
        if len(members) == 1:
            b.add_node(members[0])
            return
        op, group, _, _ = key
        with b.scope(members[-1], "bucket"):
            flat = b.concat(*[b.reshape(m.inputs[0], shape=(m.inputs[0].type.numel,)) for m in members], axis=0)
            summed = b.all_reduce(flat, op=op, group=group)
            start = 0
            for m in members:
                n = m.inputs[0].type.numel
                part = b.slice(summed, starts=(start,), stops=(start + n,), steps=(1,))
                env[m.outputs[0]] = b.reshape(part, shape=m.outputs[0].type.shape)
                start += n

    for node in graph.nodes:
        n = node
        if any(v in env for v in n.inputs):
            n = n.with_(inputs=tuple(env.get(v, v) for v in n.inputs))
        reads = set(n.inputs)
        for key in [k for k, ms in pending.items() if any(m.outputs[0] in reads for m in ms)]:
            flush(key)
        if any(v in env for v in n.inputs):     # a flush just now may have renamed an input
            n = n.with_(inputs=tuple(env.get(v, v) for v in n.inputs))
        key = _key(n)
        if key is None:
            b.add_node(n)
            continue
        pending.setdefault(key, []).append(n)
        if last[key] is node or sum(m.inputs[0].type.nbytes for m in pending[key]) >= bucket_bytes:
            flush(key)
    for key in list(pending):
        flush(key)
    return b.finish([env.get(v, v) for v in graph.outputs], meta=graph.meta)

