"""Fusion: `fuse(graph) -> graph` whose nodes are kernels.

Each node starts in a group of its own, except the cheap ones every kernel can recompute where
it reads them: views (reshape, permute, expand, slice: index arithmetic), constants (full,
iota) and 0-d elementwise math (bias corrections, clip coefficients). Then, best pair first:

- **vertical**: a producer into its consumer (elementwise chains; elementwise into a reduction
  and the elementwise epilogue after it: softmax, the norms, cross-entropy become one kernel);
- **horizontal**: two groups that read the same buffer over the same iteration space;
- **foreach**: independent groups of the optimizer update packed into a few launches.

Legality (`can_fuse`) is kept apart from priority (`score_fusion`), like Inductor's scheduler.
A pair is refused when a group is an extern kernel (matmul, templates, scatters, collectives),
when sizes disagree, when a reduction would be read along its own reduced axes, or when the
merge would make a cycle (checked on the networkx DAG of groups); each refusal is logged on
`tracegrad.fusion` with its reason. Extern kernels are never merged, so a matmul is never
recomputed.

    # tracegrad IR | loss_fn#0 | stage 4: fused (0.2 ms) | 13 ops -> 2 kernels
    t0: f32[4, 16] = ops.matmul(x, w)                 # k0 extern matmul
    t4: f32[] = k1_red_fused_add_gelu_sum(t0, b)      # k1 reduction 64 -> 1
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import networkx as nx

from ..graph import Graph, Node, Value
from ..ops.kernel import Body
from ..ops.registry import ELEMENTWISE, get
from .fusion_plan import (CONSTS, INDEXED, RANDOM, VIEWS, Refuse, check_group, is_pointwise, is_reduction,
                          rnumel_of, rng_state_out)

log = logging.getLogger("tracegrad.fusion")

MAX_NODES = 400        # ops in one kernel
MAX_ARGS = 64          # buffers one kernel reads and writes
FOREACH_PARTS = 8      # groups packed into one foreach launch
SPLIT_AT = 1 << 16     # full reductions longer than this run in two stages
SMALL, BROADCAST = 1 << 16, 4   # elementwise results this small, read broadcast 4x wider, are recomputed
FEW_ROWS, BIG_ROWS = 128, 1 << 16   # elementwise work joins a reduction only where it keeps programs busy


@dataclass
class Group:
    gid: int
    members: list[int]                  # indices of the nodes it owns, ascending
    kind: str                           # "pointwise" | "reduction" | "extern"
    sig: tuple                          # ("p", numel) | ("r", rows, row length) | ("e",)
    parts: list = field(default_factory=list)   # foreach: member lists of the packed groups


def classify(n: Node) -> str:
    """view / const / scalar (recomputed by each reader) or pointwise / reduction / extern."""
    if n.op in VIEWS:
        return "view"
    if n.op in CONSTS:
        return "const"
    if is_pointwise(n):
        if n.op not in INDEXED + RANDOM and len(n.outputs) == 1 and n.out.type.numel <= 1:
            return "scalar"
        return "pointwise"
    if is_reduction(n):
        return "reduction"
    return "extern"


def _sig(n: Node, cls: str) -> tuple:
    if cls == "reduction":
        return ("r", n.out.type.numel, rnumel_of(n))
    if cls == "pointwise":
        return ("p", n.outputs[0].type.numel)
    return ("e",)


def describe(n: Node) -> str:
    return f"{n.outputs[0].name if n.outputs else n.op} ({n.op})"


class Fuser:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes = graph.nodes
        self.cls = [classify(n) for n in self.nodes]
        self.prod: dict[Value, int] = {o: i for i, n in enumerate(self.nodes) for o in n.outputs}
        self.users: dict[Value, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for v in n.inputs:
                self.users.setdefault(v, []).append(i)
        self.outputs = set(graph.outputs)
        for i in reversed(range(len(self.nodes))):   # consumers first: a chain of broadcasts is recomputed whole
            if self.cls[i] == "pointwise" and self.broadcast_only(i):
                self.cls[i] = "scalar"
        self.groups: dict[int, Group] = {}
        self.group_of: dict[int, int] = {}
        buffers = self.scalars_needed_as_buffers()
        for i, n in enumerate(self.nodes):
            if self.cls[i] in ("pointwise", "reduction", "extern") or i in buffers:
                kind = self.cls[i] if i not in buffers else "pointwise"
                self.groups[i] = Group(i, [i], kind, _sig(n, kind))
                self.group_of[i] = i
        self._src: dict[Value, frozenset] = {}
        self.dag = nx.DiGraph()
        self.dag.add_nodes_from(self.groups)
        for i in self.groups:
            for v in self.nodes[i].inputs:
                for s in self.sources(v):
                    if s != i:
                        self.dag.add_edge(s, i)
        self.refused: set = set()
        self._inputs: dict[int, tuple] = {}

    def broadcast_only(self, i: int) -> bool:
        """A small elementwise node (a bias cast, a norm's weight math) whose every reader broadcasts it
        over at least BROADCAST times more elements: cheaper to recompute in each reader than to launch."""
        n = self.nodes[i]
        if n.op in INDEXED + RANDOM or len(n.outputs) != 1 or n.out in self.outputs or n.out.type.numel > SMALL:
            return False
        stack, seen = [n.out], set()
        while stack:
            v = stack.pop()
            for u in self.users.get(v, ()):
                if u in seen:
                    continue
                seen.add(u)
                if self.cls[u] == "view":
                    if self.nodes[u].out in self.outputs:
                        return False
                    stack.append(self.nodes[u].out)
                elif self.cls[u] in ("extern", "const") or (self.cls[u] != "scalar" and max(
                        o.type.numel for o in self.nodes[u].outputs) < BROADCAST * n.out.type.numel):
                    return False
        return True

    def scalars_needed_as_buffers(self) -> set[int]:
        """0-d math that a graph output or an extern kernel reads (through views): it needs a kernel."""
        out, stack, seen = set(), list(self.graph.outputs), set()
        for i, n in enumerate(self.nodes):
            if self.cls[i] == "extern":
                stack.extend(n.inputs)
        while stack:
            v = stack.pop()
            i = self.prod.get(v)
            if i is None or i in seen:
                continue
            seen.add(i)
            if self.cls[i] in ("view", "const"):
                stack.extend(self.nodes[i].inputs)
            elif self.cls[i] == "scalar":
                out.add(i)
        return out

    # -- reading through views ------------------------------------------------------------------
    def sources(self, v: Value) -> frozenset:
        """Owning nodes whose outputs `v` is computed from through views, constants and scalars only."""
        if v in self._src:
            return self._src[v]
        i = self.prod.get(v)
        if i is None:
            out = frozenset()
        elif self.cls[i] in ("view", "const", "scalar"):
            out = frozenset().union(*(self.sources(u) for u in self.nodes[i].inputs)) if self.nodes[i].inputs \
                else frozenset()
        else:
            out = frozenset([i])
        self._src[v] = out
        return out

    def dups(self, members) -> list[int]:
        """The view/const/scalar nodes a group recomputes to read its inputs."""
        need, stack = set(), [v for m in members for v in self.nodes[m].inputs]
        while stack:
            v = stack.pop()
            i = self.prod.get(v)
            if i is not None and self.cls[i] in ("view", "const", "scalar") and i not in need:
                need.add(i)
                stack.extend(self.nodes[i].inputs)
        return sorted(need)

    def body(self, members, outputs=None) -> Body:
        idx = sorted(set(members) | set(self.dups(members)))
        nodes = [self.nodes[i] for i in idx]
        made = {o for n in nodes for o in n.outputs}
        ins = list(dict.fromkeys(v for n in nodes for v in n.inputs if v not in made))
        if outputs is None:
            mine = set(members)
            outputs = [o for m in sorted(members) for o in self.nodes[m].outputs
                       if o in self.outputs or any(u not in mine for u in self.users.get(o, ()))]
        return Body("kernel", tuple(ins), tuple(nodes), tuple(outputs))

    # -- legality -------------------------------------------------------------------------------
    def can_fuse(self, a: Group, b: Group) -> tuple[bool, str]:
        """Whether groups a and b may become one kernel, and if not, why."""
        if a.kind == "extern" or b.kind == "extern":
            e = a if a.kind == "extern" else b
            n = self.nodes[e.members[0]]
            what = "extern kernel has no epilogue" if n.op == "matmul" else f"{n.op} runs as its own kernel"
            return False, what
        if a.sig[0] == b.sig[0] == "p" and a.sig != b.sig:
            return False, f"different sizes: {a.sig[1]} vs {b.sig[1]} elements"
        if a.sig[0] == b.sig[0] == "r" and a.sig != b.sig:
            return False, (f"reductions over different shapes: {a.sig[1]} rows of {a.sig[2]} vs "
                           f"{b.sig[1]} rows of {b.sig[2]}")
        if {a.sig[0], b.sig[0]} == {"p", "r"}:
            (_, x, r), (_, n) = (a.sig, b.sig) if a.sig[0] == "r" else (b.sig, a.sig)
            if n not in (x * r, x):
                return False, f"{n} elements fit neither the {x} rows nor the {x * r} elements of the reduction"
            if n == x * r and x < FEW_ROWS and n > BIG_ROWS:
                return False, f"{n} elements of elementwise work would run on {x} rows (too few programs)"
        if len(a.members) + len(b.members) > MAX_NODES:
            return False, f"the kernel would have more than {MAX_NODES} ops"
        via = self.cycle_via(a.gid, b.gid)
        via = via if via is not None else self.cycle_via(b.gid, a.gid)
        if via is not None:
            return False, f"fusing would create a cycle through {self.name(via)}"
        members = sorted(a.members + b.members)
        body = self.body(members)
        if len(body.inputs) + len(body.outputs) > MAX_ARGS:
            return False, f"the kernel would take more than {MAX_ARGS} buffers"
        if a.kind == "reduction" or b.kind == "reduction":
            try:
                check_group(body)
            except Refuse as e:
                return False, str(e)
        return True, ""

    def cycle_via(self, a: int, b: int):
        """A group on a path a -> ... -> b other than the edge a -> b (fusing a and b would close a cycle)."""
        end = self.groups[b].members[-1]
        seen, stack = set(), [s for s in self.dag.successors(a) if s != b]
        while stack:
            g = stack.pop()
            if g in seen or self.groups[g].members[0] > end:
                continue   # NOTE: a path into b needs a node before b's last one
            if self.dag.has_edge(g, b):
                return g
            seen.add(g)
            stack.extend(s for s in self.dag.successors(g) if s != b)
        return None

    # -- priority -------------------------------------------------------------------------------
    def score_fusion(self, a: Group, b: Group, vertical: bool, shared: int) -> tuple:
        """Higher first: a reduction's epilogue (the rows it broadcasts back), other producer-consumer
        pairs, then same-input pairs, and last anything joining a reduction over outer axes (column
        sums, e.g. bias gradients: they should not pull in work the row kernels want); within each,
        the bytes that stay on chip, then nearness."""
        dist = abs(b.members[0] - a.members[-1])
        epilogue = vertical and a.kind == "reduction" and b.kind == "pointwise" and b.sig[1] == a.sig[1] * a.sig[2]
        column = self.is_column(a) or self.is_column(b)
        return (0 if column else 3 if epilogue else 2 if vertical else 1, shared, -dist)

    def is_column(self, g: Group) -> bool:
        if g.kind != "reduction":
            return False
        n = next(self.nodes[m] for m in g.members if is_reduction(self.nodes[m]))
        axes = n.attrs["axes"] if n.op != "argmax" else (n.attrs["axis"],)
        return n.inputs[0].type.ndim - 1 not in axes

    def inputs_of(self, gid: int) -> tuple:
        if gid not in self._inputs:
            self._inputs[gid] = self.body(self.groups[gid].members).inputs
        return self._inputs[gid]

    def candidates(self) -> list[tuple]:
        self._inputs = {}
        out = []
        for a, b in self.dag.edges:
            ga, gb = self.groups[a], self.groups[b]
            mine = {o for m in ga.members for o in self.nodes[m].outputs}
            reads = set(self.inputs_of(b)) if gb.kind != "extern" else set(self.nodes[b].inputs)
            shared = sum(v.type.nbytes for v in reads & mine)
            out.append((self.score_fusion(ga, gb, True, shared), a, b))
        by_input: dict[Value, list[int]] = {}
        for g in self.groups.values():
            if g.kind == "extern":
                continue
            for v in self.inputs_of(g.gid):
                if v.type.numel > 1:
                    by_input.setdefault(v, []).append(g.gid)
        for v, gs in by_input.items():
            gs = sorted(set(gs), key=lambda g: self.groups[g].members[0])
            for a, b in zip(gs, gs[1:]):
                if not self.dag.has_edge(a, b) and not self.dag.has_edge(b, a):
                    out.append((self.score_fusion(self.groups[a], self.groups[b], False, v.type.nbytes), a, b))
        by_sig: dict[tuple, list[int]] = {}    # independent work of one shape (dw and db of a norm)
        for g in sorted(self.groups.values(), key=lambda g: g.members[0]):
            if g.kind == "reduction":
                by_sig.setdefault((g.sig, self.nodes[g.members[0]].phase), []).append(g.gid)
        for gs in by_sig.values():
            for a, b in zip(gs, gs[1:]):
                if not self.dag.has_edge(a, b) and not self.dag.has_edge(b, a):
                    out.append((self.score_fusion(self.groups[a], self.groups[b], False, 0), a, b))
        out.sort(key=lambda t: t[0], reverse=True)
        return out

    # -- merging --------------------------------------------------------------------------------
    def merge(self, a: int, b: int) -> None:
        ga, gb = self.groups[a], self.groups.pop(b)
        ga.members = sorted(ga.members + gb.members)
        self._inputs.pop(a, None)
        self._inputs.pop(b, None)
        if gb.kind == "reduction":
            ga.kind, ga.sig = "reduction", gb.sig
        for m in gb.members:
            self.group_of[m] = a
        for p in list(self.dag.predecessors(b)):
            if p != a:
                self.dag.add_edge(p, a)
        for s in list(self.dag.successors(b)):
            if s != a:
                self.dag.add_edge(a, s)
        self.dag.remove_node(b)

    def name(self, gid: int) -> str:
        g = self.groups[gid]
        return describe(self.nodes[g.members[-1]])

    def refuse(self, a: Group, b: Group, why: str) -> None:
        key = (a.gid, b.gid, why)
        if key not in self.refused:
            self.refused.add(key)
            log.info("cannot fuse %s with %s: %s", self.name(a.gid), self.name(b.gid), why)

    def run(self, rounds: int = 10) -> None:
        for _ in range(rounds):
            fused = False
            for _, a, b in self.candidates():
                if a not in self.groups or b not in self.groups or a == b:
                    continue
                ok, why = self.can_fuse(self.groups[a], self.groups[b])
                if ok:
                    log.debug("fuse %s into %s", self.name(b), self.name(a))
                    self.merge(a, b)
                    fused = True
                else:
                    self.refuse(self.groups[a], self.groups[b], why)
            if not fused:
                break
        assert nx.is_directed_acyclic_graph(self.dag), "fusion made a cycle"

    def pack_foreach(self) -> None:
        """Pack independent groups of the optimizer update into few launches."""
        order = list(nx.lexicographical_topological_sort(self.dag, key=lambda g: min(self.groups[g].members)))
        bucket: list[int] = []
        for g in order + [None]:
            grp = self.groups.get(g) if g is not None else None
            ok = (grp is not None and grp.kind == "pointwise" and not grp.parts
                  and all(self.nodes[m].phase == "update" for m in grp.members))
            if ok and bucket and len(bucket) < FOREACH_PARTS and not any(
                    nx.has_path(self.dag, h, g) for h in bucket):
                bucket.append(g)
                continue
            if len(bucket) > 1:
                self._pack(bucket)
            bucket = [g] if ok else []

    def _pack(self, gids: list[int]) -> None:
        first = self.groups[gids[0]]
        first.parts = [list(self.groups[g].members) for g in gids]
        for g in gids[1:]:
            self.merge(gids[0], g)
        first.kind = "foreach"
        log.debug("foreach kernel of %d groups", len(gids))


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


def decompose_unless(graph: Graph, supported) -> Graph:
    """Decompose the composites for which `supported(node)` is false (a template cannot take that
    shape, mask or dtype); the others stay for their templates. Graph -> Graph."""
    from ..builder import GraphBuilder
    from .decompose import _rename
    if all(not get(n.op).is_composite or supported(n) for n in graph.nodes):
        return graph
    b = GraphBuilder.continuing(graph)
    env: dict[Value, Value] = {}
    for n in graph.nodes:
        if any(v in env for v in n.inputs):
            n = n.with_(inputs=tuple(env.get(v, v) for v in n.inputs))
        opdef = get(n.op)
        if not opdef.is_composite or supported(n):
            b.add_node(n)
            continue
        start = len(b.nodes)
        b.phase = n.phase
        with b.scope(n, n.tag or f"decompose({n.op})"):
            outs = opdef.decompose(b, *n.inputs, **n.attrs)
        _rename(b, start, outs if isinstance(outs, tuple) else (outs,), n.outputs, env)
    return decompose_unless(b.finish([env.get(v, v) for v in graph.outputs], meta=graph.meta), supported)


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


def fuse(graph: Graph, foreach: bool = True) -> Graph:
    """Graph -> Graph of kernel nodes, extern nodes and host views (see the module docstring)."""
    n_ops = len(graph.nodes)
    graph = split_reductions(graph)
    f = Fuser(graph)
    f.run()
    if foreach:
        f.pack_foreach()
    return _emit(f, graph, n_ops)


def _emit(f: Fuser, graph: Graph, n_ops: int) -> Graph:
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
        if g.parts:   # foreach: each part writes what anyone outside it reads
            body = body.with_(meta={"parts": [f.body(p, [o for o in outs if f.prod[o] in set(p)]) for p in g.parts]})
        out_nodes.append(_kernel_node(body, g.kind, k, f, g))
        k += 1
    return Graph(graph.name, graph.inputs, tuple(out_nodes), graph.outputs,
                 {**graph.meta, "summary": f"{n_ops} ops -> {k} kernels", "kernels": k})


def _kernel_node(body: Body, kind: str, k: int, f: Fuser, g: Group) -> Node:
    own = [f.nodes[i] for i in g.members]
    name = kernel_name(own, kind, k)
    if kind == "reduction":
        red = next(n for n in own if is_reduction(n))
        info = f"reduction {red.inputs[0].type.numel} -> {red.out.type.numel}"
    elif kind == "foreach":
        info = f"foreach {len(g.parts)} x pointwise"
    else:
        info = f"pointwise {max(v.type.numel for v in body.outputs)}"
    return Node("kernel", body.inputs, body.outputs, dict(body=body, name=name, kind=kind, info=info),
                own[0].prov, "", own[0].phase)


# -- text -------------------------------------------------------------------------------------------
def kernel_lines(graph: Graph) -> dict[int, str]:
    """`# k3 ...` notes for the nodes of a fused graph that launch something."""
    notes, k = {}, 0
    for i, n in enumerate(graph.nodes):
        if n.op == "kernel":
            notes[i] = f"k{k} {n.attrs['info']}"
            k += 1
        elif classify(n) == "extern":
            notes[i] = f"k{k} {'template' if get(n.op).is_composite else 'extern'} {n.op}"
            k += 1
    return notes


def format_fused(graph: Graph) -> str:
    """The fused graph as STYLE.md item 4 shows it: one line per kernel, named by kind and origin."""
    from ..printer import format_graph, format_node
    notes = kernel_lines(graph)
    pos = {id(n): i for i, n in enumerate(graph.nodes)}

    def line(n: Node) -> str:
        if n.op == "kernel":
            outs = n.outputs
            lhs = f"{outs[0].name}: {outs[0].type}" if len(outs) == 1 else ", ".join(o.name for o in outs)
            text = f"{lhs} = {n.attrs['name']}({', '.join(v.name for v in n.inputs)})"
        else:
            text = format_node(n).split("  # ")[0]
        note = notes.get(pos[id(n)])
        return f"{text:<48}  # {note}" if note else text
    return format_graph(graph, body=line)


def flops(n: Node) -> int:
    """A rough count of floating-point operations (matmul 2MNK, attention 4 T S D per head, else one
    per element per op)."""
    if n.op == "kernel":
        return sum(flops(m) for m in n.attrs["body"].nodes)
    if n.op == "matmul":
        a, b = n.inputs
        return 2 * n.out.type.numel * a.shape[-1]
    if n.op.startswith("scaled_dot_product_attention"):
        q, k = n.inputs[0].type, n.inputs[1].type
        return (4 if n.op.endswith("attention") else 10) * q.numel * k.shape[-2]
    if n.op in VIEWS + CONSTS:
        return 0
    kind = get(n.op).kind
    if kind in ELEMENTWISE or kind in ("reduce", "composite"):
        return max(v.type.numel for v in list(n.inputs) + list(n.outputs))
    return 0


def explain_kernels(graph: Graph) -> list[str]:
    """One entry per launch of a fused graph: name, kind, ops, provenance, bytes moved, flops."""
    notes = kernel_lines(graph)
    lines = [f"  kernels: {graph.meta.get('kernels', len(notes))} launches"]
    for i, n in enumerate(graph.nodes):
        if i not in notes:
            continue
        nbytes = sum(v.type.nbytes for v in set(n.inputs) | set(n.outputs))
        if n.op == "kernel":
            body = n.attrs["body"]
            ops = [m.op for m in body.nodes if m.op not in VIEWS]
            head = f"{n.attrs['name']}  ({len(ops)} ops: {', '.join(dict.fromkeys(ops))})"
            provs = list(dict.fromkeys(m.prov for m in body.nodes if m.prov is not None))
        else:
            head, provs = f"{n.op}", [n.prov] if n.prov else []
        lines.append(f"  {notes[i]:<36} {head}")
        lines.append(f"      {nbytes:,} bytes, {flops(n):,} flop; writes {', '.join(o.name for o in n.outputs)}")
        lines += [f"      {p}" for p in provs[:4]]
    return lines
