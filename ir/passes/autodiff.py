"""Reverse-mode autodiff: one driver for eager tapes, traced steps and whole graphs.

`backprop` walks nodes in reverse, calls each op's VJP rule through a builder (so the rules emit
IR in a trace, or compute in eager mode), sums cotangents that meet, and undoes broadcasting
once here (`sum_to`) so no rule has to. Nodes are anything with `.op`, `.inputs`, `.outputs`,
`.attrs`; handles are whatever the builder uses (IR `Value`s or frontend Tensors).

`grad` is the same driver as a graph pass: Graph -> Graph with the gradients appended.

A node may carry its own rule as `node.vjp(builder, node, cotangents)`: the frontend's tape does
so for a call of a compiled function, whose backward is a compiled program of its own.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..builder import Builder, GraphBuilder
from ..graph import Graph, Value
from ..ops.registry import get


def _key(h) -> int:
    return id(h)


def backprop(nodes: Sequence[Any], b: Builder, seeds: dict, wrt: Sequence[Any]) -> list:
    """Cotangents of `wrt` given output cotangents `seeds` ({handle: cotangent}), or None where
    no path leads from a `wrt` handle to a seeded one."""
    live = {_key(w) for w in wrt}
    active = []
    for n in nodes:                       # forward: which nodes depend on wrt
        if _differentiable(n) and any(_key(x) in live for x in n.inputs):
            active.append(n)
            live.update(_key(o) for o in n.outputs)
    cot: dict[int, Any] = {_key(h): g for h, g in seeds.items()}
    for n in reversed(active):
        gs = [cot.get(_key(o)) for o in n.outputs]
        if all(g is None for g in gs):
            continue
        rule = getattr(n, "vjp", None) or get(n.op).vjp
        if rule is None:
            raise NotImplementedError(
                f"{n.op} has no VJP rule here; decompose it first (composites without a VJP "
                f"are differentiated through their decomposition)")
        with b.scope(n, f"vjp({n.op})"):
            contribs = rule(b, n, gs)
            for x, c in zip(n.inputs, contribs):
                if c is None or _key(x) not in live:
                    continue
                c = _fit(b, c() if callable(c) else c, b.type_of(x))
                k = _key(x)
                cot[k] = c if k not in cot else b.add(cot[k], c)
    return [cot.get(_key(w)) for w in wrt]


def _differentiable(n) -> bool:
    return getattr(n, "vjp", None) is not None or not get(n.op).nondiff


def _fit(b: Builder, c, want):
    """The one place broadcasting is undone and dtypes are matched."""
    c = b.sum_to(c, want.shape)
    return b.cast_to(c, want.dtype)


def grad(graph: Graph, wrt: Sequence[Value] | None = None, of: int = 0) -> Graph:
    """Graph -> Graph returning (outputs..., d outputs[of] / d wrt...). `outputs[of]` must be a scalar.

    Composites without a VJP must have been decomposed (see `decompose`).
    """
    wrt = list(graph.inputs if wrt is None else wrt)
    loss = graph.outputs[of]
    if loss.type.shape != ():
        raise ValueError(f"grad needs a scalar output, got {loss.type}")
    b = GraphBuilder.continuing(graph, phase="backward")
    b.nodes = list(graph.nodes)
    with b.scope(tag="seed"):
        seed = b.full_like(loss, 1.0)
    grads = backprop(graph.nodes, b, {loss: seed}, wrt)
    grads = [g if g is not None else b.zeros_like(w) for g, w in zip(grads, wrt)]
    return b.finish(tuple(graph.outputs) + tuple(grads), meta={**graph.meta, "stage": "grad"})
