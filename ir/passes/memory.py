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
