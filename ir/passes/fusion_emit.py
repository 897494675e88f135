"""From the fusion pass's groups to the fused graph: kernel nodes (named by kind and origin),
extern nodes and the views the host must make, in an order that respects every value's
producer; plus the graph rewrites fusion runs first (two-stage long reductions, decomposing the
composites no template can take).
"""
from __future__ import annotations

import math
import re

import networkx as nx

from ..graph import Graph, Node
from ..ops.registry import get as get_op
from ..ops.kernel import Body
from ..types import float32
from .fusion_index import reduce_axes
from .fusion_plan import CONSTS, VIEWS, is_reduction, rnumel_of

SPLIT_AT = 1 << 16     # full reductions longer than this run in two stages
# Column reductions (the innermost axis kept: a bias gradient over [16384, 3072]) run in two stages
# when they have this many rows or more and too few columns to keep the GPU busy on their own.
COLUMN_SPLIT = {"rows": 512, "columns": 1 << 16, "on": True}
COLUMN_CHUNKS = (64, 128, 32, 256, 16, 8)   # rows one first-stage lane sums, by preference
# Long rows, few of them (a sampler's argmax over [256, 151936] logits): each row in this many
# parts first, so the GPU runs rows x parts programs instead of one a row.
ROW_SPLIT = {"rows": 1024, "rnumel": 1 << 15, "parts": (128, 64, 32, 256, 16)}


def split_reductions(graph: Graph, columns: bool = True) -> Graph:
    """Long reductions -> two stages, so the work spreads over many programs. Graph -> Graph;
    numpy-exact up to summation order.

    - sum/max of a long vector to one value: rows of a block, then the rows;
    - a column reduction (see `column_split`): chunks of rows, then the chunks' partial results.
      Its first stage reads the input once along the contiguous axis; half inputs sum in fp32
      between the stages and round once at the end, like the one-stage reduction;
    - a few long rows reduced along their last axis (see `row_split`): parts of each row, then
      the parts; an argmax keeps each part's maximum and its place, and the winner's place is
      read back at the part that holds the row's first maximum.
    `columns=False` leaves the last two alone (CPU loops: threads split the rows or columns, and
    a loop over a block of columns reads rows contiguously without a second stage)."""
    from ..builder import GraphBuilder
    b = GraphBuilder.continuing(graph, phase="forward")
    changed = False
    for n in graph.nodes:
        rows = n.out.type.numel if n.op in ("sum", "max") else 0
        total = rnumel_of(n) if rows == 1 else 0
        split = next((s for s in (1024, 512, 256, 128) if total >= SPLIT_AT and total % s == 0), None)
        col = column_split(n) if rows > 1 and columns else None
        parts = row_split(n) if columns and split is None and col is None else None
        if split is None and col is None and parts is None:
            b.add_node(n)
            continue
        changed = True
        b.phase = n.phase
        with b.scope(n, n.tag):
            if split is not None:
                flat = b.reshape_to(n.inputs[0], (split, total // split))
                part = b.emit(n.op, [flat], dict(axes=(1,), keepdim=False))[0]
                whole = b.emit(n.op, [part], dict(axes=(0,), keepdim=False))[0]
            elif col is not None:
                whole = _two_stage_columns(b, n, *col)
            else:
                whole = _two_stage_rows(b, n, parts)
            out = b.reshape_to(whole, n.out.shape)
        _rename_last(b, out, n)
    return b.finish(graph.outputs, meta=graph.meta) if changed else graph


def _rename_last(b, out, n: Node) -> None:
    """The node that made `out` (the last one emitted) writes n's output value instead."""
    last = b.nodes[-1]
    assert out in last.outputs, (n.out.name, out.name)
    b.nodes[-1] = last.with_(outputs=tuple(n.out if o is out else o for o in last.outputs))


def merged_axes(shape, axes) -> tuple[list[int], list[bool]]:
    """The reduction's input with adjacent axes of one kind (reduced or kept) merged and size-1
    axes dropped: (sizes, reduced?). [B, T, C] over (0, 1) -> ([B*T, C], [True, False])."""
    sizes, red = [], []
    for i, s in enumerate(shape):
        if s == 1:
            continue
        if red and red[-1] == (i in axes):
            sizes[-1] *= s
        else:
            sizes.append(s)
            red.append(i in axes)
    return sizes, red


def column_split(n: Node):
    """(merged sizes, reduced?, the merged axis to split, chunk) for a sum/max over outer axes
    worth two stages, else None."""
    if n.op not in ("sum", "max") or not COLUMN_SPLIT["on"]:
        return None
    sizes, red = merged_axes(n.inputs[0].shape, reduce_axes(n))
    if not red or red[-1] or not any(red):
        return None
    rows = math.prod(s for s, r in zip(sizes, red) if r)
    if rows < COLUMN_SPLIT["rows"] or math.prod(sizes) // rows >= COLUMN_SPLIT["columns"]:
        return None
    axis = max((k for k, r in enumerate(red) if r), key=lambda k: sizes[k])
    chunk = next((c for c in COLUMN_CHUNKS if sizes[axis] % c == 0 and sizes[axis] // c >= 2), None)
    return None if chunk is None else (sizes, red, axis, chunk)


def row_split(n: Node):
    """The number of parts to cut each row of a sum/max/argmax over the last axis into, when
    the rows are few and long; else None."""
    if n.op not in ("sum", "max", "argmax"):
        return None
    x = n.inputs[0].type
    if x.ndim < 2 or reduce_axes(n) != (x.ndim - 1,) or not x.dtype.is_floating:
        return None
    r = x.shape[-1]
    if x.numel // r > ROW_SPLIT["rows"] or r < ROW_SPLIT["rnumel"]:
        return None
    return next((p for p in ROW_SPLIT["parts"] if r % p == 0 and r // p >= 256), None)


def _two_stage_rows(b, n: Node, parts: int):
    x = n.inputs[0]
    lead, r = b.shape(x)[:-1], b.shape(x)[-1]
    cut = b.reshape_to(x, lead + (parts, r // parts))
    last = len(lead) + 1
    if n.op != "argmax":
        if n.op == "sum" and b.dtype(x).itemsize < 4:
            cut = b.cast_to(cut, float32)
        part = b.emit(n.op, [cut], dict(axes=(last,), keepdim=False))[0]
        whole = b.emit(n.op, [part], dict(axes=(last - 1,), keepdim=False))[0]
        return b.cast_to(whole, n.out.type.dtype)
    best = b.emit("max", [cut], dict(axes=(last,), keepdim=False))[0]             # [..., parts]
    where = b.emit("argmax", [cut], dict(axis=last, keepdim=False))[0]            # its place in the part
    winner = b.emit("argmax", [best], dict(axis=last - 1, keepdim=True))[0]       # the first part holding the max
    inside = b.emit("gather", [where, winner], dict(axis=last - 1))[0]
    return b.add(b.mul(winner, r // parts), inside)


def _two_stage_columns(b, n: Node, sizes, red, axis, chunk):
    x = n.inputs[0]
    if n.op == "sum" and x.type.dtype.itemsize < 4 and x.type.dtype.is_floating:
        x = b.cast_to(x, float32)
    shape = sizes[:axis] + [sizes[axis] // chunk, chunk] + sizes[axis + 1:]
    part = b.emit(n.op, [b.reshape_to(x, shape)], dict(axes=(axis + 1,), keepdim=False))[0]
    rest = tuple(k for k, r in enumerate(red) if r)
    whole = b.emit(n.op, [part], dict(axes=rest, keepdim=False))[0]
    return b.cast_to(b.reshape_to(whole, n.out.shape), n.out.type.dtype)


def kernel_name(nodes, kind: str, k: int) -> str:
    """`k3_red_fused_sub_exp_sum_div`: kind and the ops (or the composites they came from)."""
    names = []
    for n in nodes:
        tag = n.tag.removeprefix("remat:")
        origin = tag[len("decompose("):-1] if tag.startswith("decompose(") else n.op
        if tag.startswith("vjp("):
            origin = tag[4:tag.index(")")] + "_bwd"
        if n.op in VIEWS + CONSTS and not tag:
            continue
        if origin not in names:
            names.append(origin)
    short = {"pointwise": "poi", "reduction": "red", "foreach": "foreach", "template": "tpl"}[kind]
    # NOTE: an identifier whatever the origins are called (a custom autograd.Function's backward
    # is tagged with its class's display name)
    return re.sub(r"\W+", "_", f"k{k}_{short}_fused_{'_'.join(names[:5]) or 'copy'}")


def emit(f, graph: Graph, n_ops: int) -> Graph:
    nodes = f.nodes
    # views and constants someone outside the kernels needs as a buffer run on the host
    host: set[int] = set()
    stack = list(graph.outputs) + [v for g in f.groups.values() if g.kind == "extern" for v in nodes[g.gid].inputs]
    while stack:
        i = f.prod.get(stack.pop())
        if i is not None and f.cls[i] in ("view", "const") and i not in host:
            host.add(i)
            stack.extend(nodes[i].inputs)
    own = {("g", g.gid): list(g.members) for g in f.groups.values()}
    own.update({("h", i): [i] for i in host})
    reads = {key: [i for i in ms] + (f.dups(ms) if key[0] == "g" and f.groups[key[1]].kind != "extern" else [])
             for key, ms in own.items()}
    needed = set(graph.outputs)
    for key, idx in reads.items():
        made = {o for i in idx for o in nodes[i].outputs}
        needed.update(v for i in idx for v in nodes[i].inputs if v not in made)
    # order: a topological sort of the launches by the values they exchange
    maker = {o: key for key, ms in own.items() for i in ms for o in nodes[i].outputs}
    dag = nx.DiGraph()
    dag.add_nodes_from(own)
    for key, idx in reads.items():
        made = {o for i in idx for o in nodes[i].outputs}
        for i in idx:
            for v in nodes[i].inputs:
                if v not in made and maker.get(v, key) != key:
                    dag.add_edge(maker[v], key)
    # NOTE: and the fuser's order of its groups, which also puts a state's new value after the readers
    # of its old one, so that it is written in place (fusion_order.state_last)
    dag.add_edges_from((("g", a), ("g", b)) for a, b in f.dag.edges)
    # NOTE: communication keeps its order, as in the fuser's DAG: a recv reads no value, and hoisted
    # above this rank's earlier send it waits for a peer that waits for that send
    comm = sorted((key for key in own if key[0] == "g" and get_op(nodes[key[1]].op).kind == "collective"),
                  key=lambda key: key[1])
    dag.add_edges_from(zip(comm, comm[1:]))
    out_nodes, k = [], 0
    for key in nx.lexicographical_topological_sort(dag, key=lambda key: own[key][0]):
        if key[0] == "h":
            out_nodes.append(nodes[key[1]])
            continue
        g = f.groups[key[1]]
        if g.kind == "extern":
            out_nodes.append(nodes[g.gid])
            k += 1
            continue
        outs = [o for i in g.members for o in nodes[i].outputs if o in needed]
        if not outs:
            continue
        body = f.body(g.members, outs)
        if g.template:
            body = body.with_(meta={"template": g.template})
        kind = g.kind
        if g.parts:   # foreach: each part writes what anyone outside it reads (a part nobody reads is dropped)
            parts = [f.body(p, [o for o in outs if f.prod[o] in set(p)]) for p in g.parts]
            parts = [p for p in parts if p.outputs]
            if len(parts) > 1:
                body = body.with_(meta={"parts": parts})
            else:
                kind = "pointwise"
        out_nodes.append(_kernel_node(body, kind, k, f, g))
        k += 1
    return Graph(graph.name, graph.inputs, tuple(out_nodes), graph.outputs,
                 {**graph.meta, "summary": f"{n_ops} ops -> {k} kernels", "kernels": k})


def _kernel_node(body: Body, kind: str, k: int, f, g) -> Node:
    own = [f.nodes[i] for i in g.members]
    name = kernel_name(own, kind, k)
    if kind == "reduction":
        red = next(n for n in own if is_reduction(n))
        info = f"reduction {red.inputs[0].type.numel} -> {red.out.type.numel}"
    elif kind == "foreach":
        info = f"foreach {len(body.meta['parts'])} x pointwise"
    elif kind == "template":
        t = g.template
        info = "template matmul" + ("+bias" if t["bias"] is not None else "") + (
            f"+{t['activation']}" if t["activation"] != "none" else "") + ("+residual" if t["residual"] is not None else "")
    else:
        info = f"pointwise {max(v.type.numel for v in body.outputs)}"
    return Node("kernel", body.inputs, body.outputs, dict(body=body, name=name, kind=kind, info=info),
                own[0].prov, "", own[0].phase)
