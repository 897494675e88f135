"""Data parallelism as a pass: the single-device graph of a step -> the graph of one dp rank.

Every rank runs the whole step on its own (local) batch, as PyTorch's DDP does; the gradients of
the state, which must be the same on every rank, are averaged over the dp group right where they
are computed, so everything after them (clipping, the optimizer) sees the global gradient and
every rank applies the same update. With equal local batches and a mean loss, that is the
gradient of the concatenated batch.

Which values are state gradients is recorded by the trace: `graph.meta["state_grads"]` pairs
each value `backward()` left in a parameter's `.grad` with that parameter's input, by name
(`((grad, param), ...)`). The pass inserts `all_reduce(grad, op="mean", group)` right after the
node that computes each of them and reads the average everywhere the gradient was read,
outputs included. `buckets.py` then packs these all_reduces into flat buckets.

    traced (single device)  ->  dp: t41 = all_reduce(t40, op="mean", group=(0, 1))  ->  bucketed
"""
from __future__ import annotations

from ...builder import GraphBuilder
from ...graph import Graph, Value


def state_gradients(graph: Graph, params=None) -> dict[Value, str]:
    """The state gradients `graph.meta` names: {gradient value: parameter input name}, only for
    the parameters in `params` (input names) when given."""
    marked = {g: p for g, p in graph.meta.get("state_grads", ()) if params is None or p in params}
    return {v: marked[v.name] for v in graph.values() if v.name in marked}


def data_parallel(graph: Graph, group: tuple, params=None) -> Graph:
    """Average the state gradients of `graph` over the ranks of `group` (a tuple of global ranks).
    `params`: the parameter input names whose gradients to average (default: every one marked)."""
    group = tuple(group)
    grads = state_gradients(graph, params)
    if len(group) == 1 or not grads:
        return graph.with_(meta={"dp_group": group})
    b = GraphBuilder.continuing(graph, phase="backward")
    env: dict[Value, Value] = {}

    def average(v: Value, node=None) -> None:
        with b.scope(node, "dp"):
            env[v] = b.all_reduce(v, op="mean", group=group)

    for v in graph.inputs:          # a gradient that is an input as it stands (no node computes it)
        if v in grads:
            average(v)
    for n in graph.nodes:
        if any(v in env for v in n.inputs):
            n = n.with_(inputs=tuple(env.get(v, v) for v in n.inputs))
        b.add_node(n)
        for v in n.outputs:
            if v in grads:
                b.phase = n.phase
                average(v, n)
    return b.finish([env.get(v, v) for v in graph.outputs], meta={**graph.meta, "dp_group": group})
