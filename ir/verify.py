"""`verify(graph)`: SSA and type checks, run after every pass when TRACEGRAD_CHECK=1.

Checks that each value is defined once before use, that every node's op exists and its output
types are what the op's shape rule says for its inputs and attributes.
"""
from __future__ import annotations

from .errors import IRError, VerifyError
from .graph import Graph
from .ops.registry import get


def verify(graph: Graph, after: str = "") -> Graph:
    where = f" after pass {after!r}" if after else ""
    defined = set()
    for v in graph.inputs:
        if v in defined:
            raise VerifyError(f"{graph.name}{where}: input {v.name} is listed twice")
        defined.add(v)
    for i, n in enumerate(graph.nodes):
        for v in n.inputs:
            if v not in defined:
                raise VerifyError(f"{graph.name}{where}: node {i} ({n.op}) reads {v.name} before it is defined")
        try:
            opdef = get(n.op)
            want = opdef.infer_types([v.type for v in n.inputs], dict(n.attrs))
        except IRError as e:
            raise VerifyError(f"{graph.name}{where}: node {i} ({n.op}): {e}") from None
        got = [o.type for o in n.outputs]
        if want != got:
            raise VerifyError(f"{graph.name}{where}: node {i} ({n.op}) outputs "
                              f"{', '.join(map(str, got))} but its rule gives {', '.join(map(str, want))}")
        for o in n.outputs:
            if o in defined:
                raise VerifyError(f"{graph.name}{where}: {o.name} is defined twice (node {i}, {n.op})")
            defined.add(o)
    for v in graph.outputs:
        if v not in defined:
            raise VerifyError(f"{graph.name}{where}: output {v.name} is never defined")
    return graph
