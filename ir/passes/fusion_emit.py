"""From the fusion pass's groups to the fused graph: kernel nodes (named by kind and origin),
extern nodes and the views the host must make, in an order that respects every value's
producer; plus the graph rewrites fusion runs first (two-stage long reductions, decomposing the
composites no template can take).
"""
from __future__ import annotations

import networkx as nx

from ..graph import Graph, Node
from ..ops.kernel import Body
from .fusion_plan import CONSTS, VIEWS, is_reduction, rnumel_of

SPLIT_AT = 1 << 16     # full reductions longer than this run in two stages


def split_reductions(graph: Graph) -> Graph:
    """sum/max of a long vector to one value -> two stages (rows of a block, then the rows), so the
    work spreads over many programs. Graph -> Graph; numpy-exact up to summation order."""
    from ..builder import GraphBuilder
    b = GraphBuilder.continuing(graph, phase="forward")
    changed = False
    for n in graph.nodes:
        rows = n.out.type.numel if n.op in ("sum", "max") else 0
        total = rnumel_of(n) if rows == 1 else 0
        split = next((s for s in (1024, 512, 256, 128) if total >= SPLIT_AT and total % s == 0), None)
        if split is None:
            b.add_node(n)
            continue
        changed = True
        b.phase = n.phase
        with b.scope(n, n.tag):
            flat = b.reshape_to(n.inputs[0], (split, total // split))
            part = b.emit(n.op, [flat], dict(axes=(1,), keepdim=False))[0]
            whole = b.emit(n.op, [part], dict(axes=(0,), keepdim=False))[0]
        out = b.reshape_to(whole, n.out.shape) if n.out.shape != () else whole
        last = b.nodes[-1]
        b.nodes[-1] = last.with_(outputs=tuple(n.out if o is out else o for o in last.outputs))
    return b.finish(graph.outputs, meta=graph.meta) if changed else graph


def kernel_name(nodes, kind: str, k: int) -> str:
    """`k3_red_fused_sub_exp_sum_div`: kind and the ops (or the composites they came from)."""
    names = []
    for n in nodes:
        tag = n.tag
        origin = tag[len("decompose("):-1] if tag.startswith("decompose(") else n.op
        if tag.startswith("vjp("):
            origin = tag[4:tag.index(")")] + "_bwd"
        if n.op in VIEWS + CONSTS and not tag:
            continue
        if origin not in names:
            names.append(origin)
    short = {"pointwise": "poi", "reduction": "red", "foreach": "foreach", "template": "tpl"}[kind]
    return f"k{k}_{short}_fused_{'_'.join(names[:5]) or 'copy'}"


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
