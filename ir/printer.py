"""The IR's text form: a runnable Python function with inline types and provenance.

    # tracegrad IR | loss_fn#0 | stage 1: simplify (0.2 ms) | 13 ops
    def loss_fn(x: f32[4, 8], w: f32[8, 16]) -> f32[]:
        # demo.py:7  return gelu(x @ w).sum()
        t0: f32[4, 16] = ops.matmul(x, w)
        ...
        return t4

`load(text, ops)` runs it, given an `ops` object whose attributes run ops (the frontend's
`tracegrad.ops`). NOTE: the one liberty the text takes with Python is the 0-d type `f32[]`, kept
because it reads best; `load` spells it `f32[()]` before executing.
"""
from __future__ import annotations

import math
import re

from .graph import Graph, Node
from .types import DType, DTYPES


def format_attr(v) -> str:
    if isinstance(v, DType):
        return v.short
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if math.isnan(v):
            return "nan"
    if isinstance(v, tuple):
        inner = ", ".join(format_attr(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    return repr(v)


def format_call(node: Node, args: list[str] | None = None, fn: str | None = None) -> str:
    args = list(args if args is not None else (v.name for v in node.inputs))
    args += [f"{k}={format_attr(v)}" for k, v in node.attrs.items()]
    return f"{fn or 'ops.' + node.op}({', '.join(args)})"


def format_node(node: Node, call: str | None = None) -> str:
    call = call or format_call(node)
    outs = node.outputs
    if len(outs) == 1:
        line = f"{outs[0].name}: {outs[0].type} = {call}"
    elif not outs:
        line = call
    else:
        line = f"{', '.join(o.name for o in outs)} = {call}"
        call_types = ", ".join(str(o.type) for o in outs)
        return line + f"  # {call_types}" + (f"  {node.tag}" if node.tag else "")
    return line + (f"  # {node.tag}" if node.tag else "")


def header(graph: Graph) -> str:
    m = graph.meta
    parts = ["# tracegrad IR", m.get("title", graph.name)]
    if "stage" in m:
        stage = f"stage {m['stage_index']}: {m['stage']}" if "stage_index" in m else f"stage: {m['stage']}"
        if "ms" in m:
            stage += f" ({m['ms']:.1f} ms)"
        parts.append(stage)
    parts.append(m.get("summary", f"{len(graph.nodes)} ops"))
    return " | ".join(parts)


def format_graph(graph: Graph, nodes=None, body=None) -> str:
    """Text of `graph`; `nodes` restricts the body (e.g. one phase), `body` overrides node lines."""
    sig = ", ".join(f"{v.name}: {v.type}" for v in graph.inputs)
    ret = ", ".join(str(v.type) for v in graph.outputs)
    lines = [header(graph)]
    saved = graph.meta.get("saved")
    if saved:
        nbytes = sum(v.type.nbytes for v in saved)
        lines.append(f"# saved for backward: {', '.join(v.name for v in saved)} ({nbytes} bytes)")
    lines.append(f"def {graph.name}({sig}) -> {'(' + ret + ')' if len(graph.outputs) != 1 else ret}:")
    last = None
    for node in (graph.nodes if nodes is None else nodes):
        if node.prov is not None and node.prov != last:
            lines.append(f"    # {node.prov}")
            last = node.prov
        lines.append("    " + (body(node) if body else format_node(node)))
    outs = ", ".join(v.name for v in graph.outputs)
    lines.append(f"    return {outs}" if outs else "    return None")
    return "\n".join(lines)


def namespace(ops) -> dict:
    """Names a dump refers to: `ops`, every dtype's short name, `inf`, `nan`."""
    ns = {d.short: d for d in DTYPES.values()}
    ns.update(ops=ops, inf=math.inf, nan=math.nan)
    return ns


def load(text: str, ops) -> dict:
    """Execute a dump; returns its namespace (the function is under the graph's name)."""
    ns = namespace(ops)
    exec("from __future__ import annotations\n" + re.sub(r"\b(\w+)\[\]", r"\1[()]", text), ns)
    return ns
