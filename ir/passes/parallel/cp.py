"""Context parallelism as a graph pass: `context_parallel(graph, group, rank, batch)` rewrites a
single-device step into the program of one rank of the cp group.

The batch arguments ([batch, sequence, ...]) are split along the sequence, zig-zag: with n ranks
the sequence is cut into 2n blocks and rank r takes blocks r and 2n-1-r, so that under a causal
mask every rank has the same amount of attention to compute. The sharding rules (`rules.py`)
carry the split through everything position-wise (embeddings, norms, MLPs, the loss, whose sums
over the sequence become partial and are all-reduced); a replicated table read along the
sequence (RoPE's cos/sin, position embeddings) is sliced to the same blocks, so every rank
uses its rows' true positions. Attention over the split sequence is ring attention (`ring.py`).
Parameters stay whole; their gradients are sums over the sequence, all-reduced over the ranks.
"""
from __future__ import annotations

from ...graph import Graph, Value
from .builder import DValue, ParallelPlanError, ShardBuilder
from .spec import R, S


def context_parallel(graph: Graph, group: tuple, rank: int, batch: tuple) -> Graph:
    b = ShardBuilder(graph, group, rank, "cp")
    b.zigzag = True
    n = b.n
    env: dict[Value, DValue] = {v: b.wrap(v) for v in graph.inputs}
    for v in graph.inputs:
        if v.name in batch:
            if len(v.shape) < 2 or v.shape[1] % (2 * n):
                raise ParallelPlanError(f"cp={n}: batch argument {v.name} {list(v.shape)}: its sequence axis (1) does "
                                        f"not split into {2 * n} blocks (2 per rank, zig-zag)")
            with b.out.scope(None, "cp(split)"):
                env[v] = b.to(env[v], S(1))
    for node in graph.nodes:
        b.node, b.out.phase = node, node.phase
        with b.out.scope(node, node.tag):
            outs = b.emit(node.op, [env[v] for v in node.inputs], dict(node.attrs))
        env.update(zip(node.outputs, outs))
    b.node = None
    with b.out.scope(None, "cp(output)"):
        outputs = [b.to(env[v], R).local for v in graph.outputs]
    return b.out.finish(outputs, meta={**graph.meta, "cp_size": n})
