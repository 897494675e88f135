"""Rematerialization: the backward recomputes cheap forward values instead of keeping them.

A value the forward computes and the backward reads stays alive from one to the other. When it is
a short elementwise chain over values the backward keeps anyway (GELU's `0.5 * h`, `h / sqrt(2)`,
`1 + erf(...)` over the matmul output `h`; a layer norm's output over its input and statistics),
recomputing the chain in the backward costs a few flops in a kernel the backward runs anyway, and
saves the chain's buffers for the whole time between the two (PyTorch's min-cut partitioner makes
the same trade for torch.compile).

    graph = rematerialize(graph)     # Graph -> Graph, before fusion

A chain is recomputed when it is at most `MAX_OPS` elementwise ops, views and constants of the
forward (no random draws) and what it reads that the backward does not keep already is no larger
than the value it replaces. Fusion keeps forward and backward groups apart (`fusion.can_fuse`), so
the recomputation lands in the backward's kernels.
"""
from __future__ import annotations

from ..graph import Graph, Node, Value
from ..ops import get
from .simplify import dce

MAX_OPS = 32
REMAT = "remat:"     # a recomputed node's tag: this, then the original's
_VIEWS = ("reshape", "permute", "expand", "slice", "stop_gradient")


def _cheap(n: Node) -> bool:
    if n.phase != "forward":
        return False
    if n.op in _VIEWS or n.op == "full":
        return True
    try:
        return get(n.op).is_elementwise
    except Exception:     # NOTE: an op the registry does not know is never recomputed
        return False


def rematerialize(graph: Graph) -> Graph:
    prod = {o: n for n in graph.nodes for o in n.outputs}
    inputs = set(graph.inputs)
    kept = {v for n in graph.nodes if n.phase != "forward" for v in n.inputs
            if v in prod and prod[v].phase == "forward"}
    names = graph.name_counter()
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    clone: dict[Value, Value] = {}      # forward value -> its recomputation in the backward
    nodes: list[Node] = []

    def chain(v: Value):
        """The forward nodes computing v from values it stops at (topological), and those values;
        None when v is not worth recomputing."""
        order, leaves, seen, stack = [], set(), set(), [v]
        while stack:
            u = stack.pop()
            if u in seen:
                continue
            seen.add(u)
            p = prod.get(u)
            if u in clone or u in inputs or p is None or not _cheap(p):
                leaves.add(u)
                continue
            order.append(p)
            stack.extend(p.inputs)
            if len(order) > MAX_OPS:
                return None
        extra = sum(u.type.nbytes for u in leaves if u not in kept and u not in inputs and u not in clone)
        if extra > v.type.nbytes or v in leaves:
            return None
        return sorted(set(order), key=lambda n: index[id(n)]), leaves

    for n in graph.nodes:
        if n.phase == "backward":
            for v in n.inputs:
                if v in clone or v not in prod or not _cheap(prod[v]):
                    continue
                found = chain(v)
                if found is None:
                    continue
                order, leaves = found
                kept |= {u for u in leaves if u not in clone}
                for p in order:
                    if p.outputs[0] in clone:
                        continue
                    outs = tuple(Value(f"t{next(names)}", o.type) for o in p.outputs)
                    nodes.append(p.with_(inputs=tuple(clone.get(u, u) for u in p.inputs), outputs=outs,
                                         phase="backward", tag=REMAT + p.tag))
                    clone.update(zip(p.outputs, outs))
            if any(v in clone for v in n.inputs):
                n = n.with_(inputs=tuple(clone.get(v, v) for v in n.inputs))
        nodes.append(n)
    if not clone:
        return graph
    return dce(graph.with_(nodes=tuple(nodes)))     # the forward's copies nobody reads now
