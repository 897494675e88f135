"""Memory planning by liveness: when each value dies, and which dying buffer a node may write
its result into instead of allocating (in-place donation).

Backends say which ops own a fresh buffer (`owns`) and which can write into an input (`inplace`);
a buffer is reused only if no live value may alias it and it is not a graph output, nor a graph
input unless the caller donated that input (`graph.meta["donated"]`: input names, see
`tg.compile(..., donate=...)`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..graph import Graph, Node, Value


@dataclass
class MemoryPlan:
    frees: dict[int, list[Value]] = field(default_factory=dict)   # node index -> values dead after it
    reuse: dict[int, Value] = field(default_factory=dict)         # node index -> input it writes into
    peak_bytes: int = 0                                             # of intermediates, by liveness


def last_uses(graph: Graph) -> dict[Value, int]:
    end = len(graph.nodes)
    last: dict[Value, int] = {}
    for i, n in enumerate(graph.nodes):
        for v in n.inputs:
            last[v] = i
        for o in n.outputs:
            last.setdefault(o, i)
    for v in graph.outputs:
        last[v] = end
    return last


def plan_memory(graph: Graph, owns: Callable[[Node], bool], inplace: Callable[[Node], bool]) -> MemoryPlan:
    last = last_uses(graph)
    donated = {v for v in graph.inputs if v.name in graph.meta.get("donated", ())}
    pinned = (set(graph.inputs) - donated) | set(graph.outputs)
    base: dict[Value, Value] = {v: v for v in donated}   # value -> the buffer it may alias
    readers: dict[Value, list[Value]] = {}   # buffer -> values that may alias it
    plan = MemoryPlan()
    live_bytes = 0
    for i, n in enumerate(graph.nodes):
        for o in n.outputs:
            if owns(n):
                base[o] = o
            else:   # a view (or identity) may alias any input's buffer
                for v in n.inputs:
                    b = base.get(v, v)
                    readers.setdefault(b, []).append(o)
                base[o] = base.get(n.inputs[0], n.inputs[0]) if n.inputs else o
        if inplace(n) and len(n.outputs) == 1:
            out = n.outputs[0]
            for x in n.inputs:
                if (x not in pinned and base.get(x) is x and last[x] == i and x.type == out.type and out.shape != ()
                        and all(last[r] <= i for r in readers.get(x, ()))):
                    plan.reuse[i] = x
                    break
        dead = [v for v in dict.fromkeys(n.inputs + n.outputs) if last.get(v) == i and v not in pinned]
        if dead:
            plan.frees[i] = dead
        live_bytes += sum(o.type.nbytes for o in n.outputs if owns(n)) - (
            n.outputs[0].type.nbytes if i in plan.reuse else 0)
        plan.peak_bytes = max(plan.peak_bytes, live_bytes)
        live_bytes -= sum(v.type.nbytes for v in dead if base.get(v) is v)
    return plan


def state_updates(graph: Graph, owns: Callable[[Node], bool]) -> dict[int, dict[Value, Value]]:
    """Where a step may update its state in place: per node index, output -> the graph input it
    may be written over. Candidates are the pairs of `graph.meta["updates"]` (output position ->
    input position: the new value of a tensor the step replaces, e.g. a parameter after the
    optimizer step, as PyTorch updates it in place); a pair holds when the node producing the new
    value is the input's last reader and no view of the input outlives that node. Whether the
    kernel's own reads allow it is the backend's to check."""
    pairs = graph.meta.get("updates", {})
    if not pairs:
        return {}
    last = last_uses(graph)
    views: dict[Value, list[Value]] = {}      # input -> values that may alias its buffer
    base = {v: v for v in graph.inputs}
    for n in graph.nodes:
        for o in n.outputs:
            if owns(n):
                continue
            for v in n.inputs:
                if v in base:
                    views.setdefault(base[v], []).append(o)
            if n.inputs and n.inputs[0] in base:
                base[o] = base[n.inputs[0]]
    producer = {o: i for i, n in enumerate(graph.nodes) for o in n.outputs}
    counts: dict[Value, int] = {}
    for v in graph.outputs:
        counts[v] = counts.get(v, 0) + 1
    out: dict[int, dict[Value, Value]] = {}
    for k, j in pairs.items():
        if k >= len(graph.outputs) or j >= len(graph.inputs):
            continue
        o, x = graph.outputs[k], graph.inputs[j]
        i = producer.get(o)
        if (i is None or counts[o] > 1 or o.type != x.type or last.get(x) != i
                or any(last.get(r, -1) > i for r in views.get(x, ()))):
            continue
        out.setdefault(i, {})[o] = x
    return out
