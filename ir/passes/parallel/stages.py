"""Cutting a step's graph into pipeline stages at module boundaries.

The units are the blocks of the model's longest `ModuleList` (`model.layers.3`, `h.3`), or its
top-level modules when it has none; contiguous units go to each stage so that the most
expensive stage costs as little as possible (forward flops). Every other forward or backward
node goes where its data is: a forward node to the latest stage it reads from, a backward node
to the earliest (the backward runs the stages in reverse), and a node that reads no staged value
(a constant, a slice of a table, the loss seed) is free: every stage that needs it computes it.
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict

from ...graph import Graph, Node
from .builder import ParallelPlanError

_BLOCK = re.compile(r"^(.*?)\.(\d+)(?:\.|$)")


def _cost(n: Node) -> int:
    if n.op == "matmul":
        return 2 * math.prod(n.outputs[0].shape) * n.inputs[0].shape[-1]
    return sum(math.prod(o.shape) for o in n.outputs)


def units(graph: Graph) -> tuple[OrderedDict, dict]:
    """(unit name -> forward cost, in forward order; node -> unit) over forward nodes."""
    mods = [n.prov.module if n.prov else "" for n in graph.nodes]
    containers: dict[str, set] = {}
    for m in mods:
        hit = _BLOCK.match(m)
        if hit:
            containers.setdefault(hit.group(1), set()).add(hit.group(2))
    best = max(containers, key=lambda c: len(containers[c]), default=None)

    def unit_of(m: str) -> str | None:
        if best is not None and len(containers[best]) > 1:
            hit = _BLOCK.match(m)
            return f"{best}.{hit.group(2)}" if hit and hit.group(1) == best else None
        return m.split(".")[0] or None

    cost, of = OrderedDict(), {}
    for n, m in zip(graph.nodes, mods):
        u = unit_of(m)
        if u is None:
            continue
        of[n] = u
        if n.phase == "forward":
            cost[u] = cost.get(u, 0) + _cost(n)
    return cost, {n: u for n, u in of.items() if u in cost}


def partition(costs: list[int], parts: int) -> list[int]:
    """Stage of each unit: contiguous, the largest stage sum as small as it can be (linear partition)."""
    n = len(costs)
    if n < parts:
        raise ParallelPlanError(f"pp={parts}: the model has {n} blocks to cut into stages; use pp <= {n}")
    prefix = [0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    cut = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0
    for p in range(1, parts + 1):
        for i in range(p, n - (parts - p) + 1):
            for j in range(p - 1, i):
                v = max(best[p - 1][j], prefix[i] - prefix[j])
                if v < best[p][i]:
                    best[p][i], cut[p][i] = v, j
    stage, i = [0] * n, n
    for p in range(parts, 0, -1):
        j = cut[p][i]
        for u in range(j, i):
            stage[u] = p - 1
        i = j
    return stage


def assign(graph: Graph, parts: int) -> tuple[dict, dict]:
    """(node -> stage or None for free, unit -> stage) for the forward and backward nodes."""
    cost, unit_of = units(graph)
    names = list(cost)
    stage_of_unit = dict(zip(names, partition([cost[u] for u in names], parts)))
    where: dict = {}
    made: dict = {}
    for n in graph.nodes:
        if n.phase not in ("forward", "backward"):
            continue
        if n in unit_of:
            s = stage_of_unit[unit_of[n]]
        else:
            staged = [made[v] for v in n.inputs if made.get(v) is not None]
            s = None if not staged else (max(staged) if n.phase == "forward" else min(staged))
        where[n] = s
        for o in n.outputs:
            made[o] = s
    return where, stage_of_unit
