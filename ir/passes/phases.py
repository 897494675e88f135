"""Views of one phase of a step's graph ("forward", "backward", "update") as a graph of its own:
its inputs are what the phase reads from elsewhere, its outputs what others read from it. The
backward view lists what it keeps from the forward (`saved`), with the bytes that costs.
"""
from __future__ import annotations

from ..graph import Graph, Value


def phase_view(graph: Graph, phase: str) -> Graph:
    nodes = [n for n in graph.nodes if n.phase == phase]
    mine = {o for n in nodes for o in n.outputs}
    ins: list[Value] = []
    for n in nodes:
        for v in n.inputs:
            if v not in mine and v not in ins:
                ins.append(v)
    read_elsewhere = {v for n in graph.nodes if n.phase != phase for v in n.inputs} | set(graph.outputs)
    outs = [o for n in nodes for o in n.outputs if o in read_elsewhere]
    meta = dict(graph.meta, stage=phase, summary=f"{len(nodes)} ops")
    meta.pop("stage_index", None)
    meta.pop("ms", None)
    if phase == "backward":
        forward = {o for n in graph.nodes if n.phase == "forward" for o in n.outputs} | set(graph.inputs)
        meta["saved"] = [v for v in ins if v in forward]
    return Graph(graph.name, tuple(ins), tuple(nodes), tuple(outs), meta)
