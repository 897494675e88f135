"""`decompose(graph, keep)`: replace composite nodes by their primitive decompositions, except the
ones `keep` names (a set of op names a backend has templates for, or a predicate on the node when
a template takes only some shapes). The composite's output values keep their names, so the stage
before and after diff cleanly.
"""
from __future__ import annotations

from typing import Callable

from ..builder import GraphBuilder
from ..graph import Graph, Node, Value
from ..ops.registry import get


def decompose(graph: Graph, keep: Callable[[Node], bool] | frozenset[str] | set[str] = frozenset()) -> Graph:
    kept = keep if callable(keep) else (lambda n: n.op in keep)
    if all(not get(n.op).is_composite or kept(n) for n in graph.nodes):
        return graph
    b = GraphBuilder.continuing(graph, phase="forward")
    env: dict[Value, Value] = {}
    for n in graph.nodes:
        if any(v in env for v in n.inputs):
            n = n.with_(inputs=tuple(env.get(v, v) for v in n.inputs))
        opdef = get(n.op)
        if not opdef.is_composite or kept(n):
            b.add_node(n)
            continue
        start = len(b.nodes)
        b.phase = n.phase
        with b.scope(n, n.tag or f"decompose({n.op})"):
            outs = opdef.decompose(b, *n.inputs, **n.attrs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        _rename(b, start, outs, n.outputs, env)
    return decompose(b.finish([env.get(v, v) for v in graph.outputs], meta=graph.meta), keep)


def _rename(b: GraphBuilder, start: int, new: tuple, old: tuple, env: dict) -> None:
    """Give the decomposition's results the composite's output names where they were made here."""
    made = {o: i for i in range(start, len(b.nodes)) for o in b.nodes[i].outputs}
    for nv, ov in zip(new, old):
        i = made.get(nv)
        if i is None or nv.type != ov.type:
            env[ov] = nv
            continue
        node = b.nodes[i]
        b.nodes[i] = node.with_(outputs=tuple(ov if o is nv else o for o in node.outputs))
        for j in range(i + 1, len(b.nodes)):   # later nodes of this decomposition may read it
            m = b.nodes[j]
            if nv in m.inputs:
                b.nodes[j] = m.with_(inputs=tuple(ov if v is nv else v for v in m.inputs))
        made[ov] = i
