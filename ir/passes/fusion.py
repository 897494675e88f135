"""Fusion: `fuse(graph) -> graph` whose nodes are kernels.

Each node starts in a group of its own, except the cheap ones every kernel can recompute where
it reads them: views (reshape, permute, expand, slice: index arithmetic), constants (full,
iota), 0-d elementwise math (bias corrections, clip coefficients), small operands read
broadcast (a bias's autocast) and short widening chains several kernels read (a bf16 gradient
cast to fp32 and scaled by a norm's weight: each reader loads 2 bytes an element instead of one
kernel writing 4 for all to load). Then, best pair first:

- **vertical**: a producer into its consumer (elementwise chains; elementwise into a reduction
  and the elementwise epilogue after it: softmax, the norms, cross-entropy become one kernel);
- **horizontal**: two groups that read the same buffer over the same iteration space, and
  independent reductions of one shape (a norm's dw and db);
- **epilogues**: a matmul whose only reader applies bias / activation / residual becomes one
  matmul-template launch with it (`fusion_epilogue`);
- **foreach**: independent groups (the optimizer update of all parameters, the prologue of
  weight casts) packed into a few launches (`fusion_foreach`).

Legality (`can_fuse`) is kept apart from priority (`score_fusion`), like Inductor's scheduler.
A pair is refused when a group is an extern kernel (matmul, templates, scatters, collectives),
when sizes disagree, when a reduction would be read along its own reduced axes, or when the
merge would make a cycle (checked on the networkx DAG of groups, `fusion_order`); each refusal is logged on
`tracegrad.fusion` with its reason. Extern kernels are never merged, so a matmul is never
recomputed.

    # tracegrad IR | loss_fn#0 | stage 4: fused (0.2 ms) | 13 ops -> 2 kernels
    t0: f32[4, 16] = ops.matmul(x, w)                 # k0 extern matmul
    t4: f32[] = k1_red_fused_add_gelu_sum(t0, b)      # k1 reduction 64 -> 1
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import networkx as nx

from ..graph import Graph, Node, Value
from ..ops.kernel import Body
from ..ops.registry import get as get_op
from .fusion_emit import emit, split_reductions
from .fusion_foreach import pack_foreach
from .fusion_order import GroupOrder, state_last
from .fusion_plan import Refuse, check_group, classify, is_reduction, rnumel_of
from .fusion_epilogue import Epilogues
from .fusion_recompute import Recompute
from .fusion_text import explain_kernels, format_fused, kernel_lines  # noqa: F401  (the pass's text form)

log = logging.getLogger("tracegrad.fusion")

__all__ = ["fuse", "Fuser", "Group", "format_fused", "explain_kernels", "kernel_lines", "classify"]

MAX_NODES = 400        # ops in one kernel
MAX_ARGS = 64          # buffers one kernel reads and writes
FEW_ROWS, BIG_ROWS = 128, 1 << 16   # elementwise work joins a reduction only where it keeps programs busy


@dataclass
class Group:
    gid: int
    members: list[int]                  # indices of the nodes it owns, ascending
    kind: str                           # "pointwise" | "reduction" | "extern"
    sig: tuple                          # ("p", numel) | ("r", rows, row length) | ("e",)
    parts: list = field(default_factory=list)   # foreach: member lists of the packed groups
    template: dict | None = None                # template: the matmul epilogue's arguments


def _sig(n: Node, cls: str) -> tuple:
    if cls == "reduction":
        return ("r", n.out.type.numel, rnumel_of(n))
    if cls == "pointwise":
        return ("p", n.outputs[0].type.numel)
    return ("e",)


def describe(n: Node) -> str:
    return f"{n.outputs[0].name if n.outputs else n.op} ({n.op})"


class Fuser(Recompute, Epilogues):
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
        self.mark_recomputed()
        self.groups: dict[int, Group] = {}
        self.group_of: dict[int, int] = {}
        buffers = self.scalars_needed_as_buffers()
        for i, n in enumerate(self.nodes):
            if self.cls[i] in ("pointwise", "reduction", "extern") or i in buffers:
                kind = self.cls[i] if i not in buffers else "pointwise"
                self.groups[i] = Group(i, [i], kind, _sig(n, kind))
                self.group_of[i] = i
        self._src: dict[Value, frozenset] = {}
        self._inputs: dict[int, tuple] = {}     # group -> the buffers its kernel reads (its members' body)
        self._scores: dict[tuple, tuple] = {}   # producer-consumer pairs as scored (see candidates)
        self.dag = nx.DiGraph()
        self.dag.add_nodes_from(self.groups)
        for i in self.groups:
            for v in self.nodes[i].inputs:
                for s in self.sources(v):
                    if s != i:
                        self.dag.add_edge(s, i)
        # NOTE: communication keeps its order (a send has no reader; moved past a recv it deadlocks)
        comm = [i for i in self.groups if get_op(self.nodes[i].op).kind == "collective"]
        self.dag.add_edges_from(zip(comm, comm[1:]))
        # node order, but a state's new value after the old one's readers: every edge goes forward
        self.topo = GroupOrder(self.dag, list(nx.lexicographical_topological_sort(self.dag))
                               if state_last(self) else sorted(self.groups))
        self.refused: set = set()
        self._body_ok: dict[tuple, tuple] = {}

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
            outputs = [o for m in sorted(members) for o in self.nodes[m].outputs if self.read_outside(o, mine)]
        return Body("kernel", tuple(ins), tuple(nodes), tuple(outputs))

    def walk(self, v: Value, through) -> Iterator[Value]:
        """v, then every value reached from it through the reader nodes `through(i)` accepts, once each
        (views of views share readers: a walk that revisits is exponential on a chain of them)."""
        seen, stack = {v}, [v]
        while stack:
            u = stack.pop()
            yield u
            for i in self.users.get(u, ()):
                if through(i):
                    fresh = [o for o in self.nodes[i].outputs if o not in seen]
                    seen.update(fresh)
                    stack.extend(fresh)

    def read_outside(self, v: Value, members: set) -> bool:
        """Whether anything but these members (seeing through recomputed views and scalars) reads v."""
        def recomputed(i):
            return self.cls[i] in ("view", "const", "scalar") and i not in members
        return any(u in self.outputs or any(not recomputed(i) and i not in members for i in self.users.get(u, ()))
                   for u in self.walk(v, recomputed))

    # -- legality -------------------------------------------------------------------------------
    def can_fuse(self, a: Group, b: Group) -> tuple[bool, str]:
        """Whether groups a and b may become one kernel, and if not, why."""
        if a.kind == "extern" or b.kind == "extern":
            e = a if a.kind == "extern" else b
            n = self.nodes[e.members[0]]
            what = "extern kernel has no epilogue" if n.op == "matmul" else f"{n.op} runs as its own kernel"
            return False, what
        if self.forward_only(a) != self.forward_only(b) and self.feeds_forward(a, b):
            # NOTE: the kernel would run in the forward, and its backward results stay alive until
            # the backward; a forward group only the backward reads may join it there
            return False, "backward work would run in the forward (what it computes would wait there)"
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
        if via is not None:
            return False, f"fusing would create a cycle through {self.name(via)}"
        # NOTE: what follows depends on the members alone; a pair refused here stays refused in later rounds
        key = (tuple(a.members), tuple(b.members), a.kind, b.kind)
        if key not in self._body_ok:
            self._body_ok[key] = self._body_fits(sorted(a.members + b.members), "reduction" in (a.kind, b.kind))
        return self._body_ok[key]

    def _body_fits(self, members: list, reduction: bool) -> tuple[bool, str]:
        body = self.body(members)
        if len(body.inputs) + len(body.outputs) > MAX_ARGS:
            return False, f"the kernel would take more than {MAX_ARGS} buffers"
        if reduction:
            try:
                check_group(body)
            except Refuse as e:
                return False, str(e)
        return True, ""

    def forward_only(self, g: Group) -> bool:
        return all(self.nodes[m].phase == "forward" for m in g.members)

    def feeds_forward(self, a: Group, b: Group) -> bool:
        """Whether the forward side of the pair (a, b) has a forward reader outside the pair."""
        fwd, inside = (a if self.forward_only(a) else b), set(a.members) | set(b.members)
        return any(self.nodes[i].phase == "forward" and i not in inside
                   for m in fwd.members for o in self.nodes[m].outputs for i in self.users.get(o, ()))

    def cycle_via(self, a: int, b: int):
        """A group on a path between a and b other than their edge (fusing them would close a cycle)."""
        return self.topo.cycle_via(a, b)

    # -- priority -------------------------------------------------------------------------------
    def score_fusion(self, a: Group, b: Group, vertical: bool, shared: int) -> tuple:
        """Higher first: a reduction's epilogue (the rows it broadcasts back), other producer-consumer
        pairs, then same-input pairs, and last anything joining a reduction over outer axes (column
        sums, e.g. bias gradients: they should not pull in work the row kernels want); within each,
        the bytes that stay on chip, then nearness."""
        dist = abs(b.members[0] - a.members[-1])
        epilogue = vertical and a.kind == "reduction" and b.kind == "pointwise" and b.sig[1] == a.sig[1] * a.sig[2]
        # NOTE: what only a column sum reads goes into it (dy * x-hat of a norm's dw), not into a row kernel
        # that would then store it for the column sum to load
        column = (self.is_column(a) or self.is_column(b)) and not (vertical and self.only_reader(a, b))
        return (0 if column else 3 if epilogue else 2 if vertical else 1, shared, -dist)

    def only_reader(self, a: Group, b: Group) -> bool:
        """Whether b's members are all that read a's results."""
        both = set(a.members) | set(b.members)
        return not any(self.read_outside(o, both) for m in a.members for o in self.nodes[m].outputs)

    def is_column(self, g: Group) -> bool:
        if g.kind != "reduction":
            return False
        n = next(self.nodes[m] for m in g.members if is_reduction(self.nodes[m]))
        axes = n.attrs["axes"] if n.op != "argmax" else (n.attrs["axis"],)
        return n.inputs[0].type.ndim - 1 not in axes

    def inputs_of(self, gid: int) -> tuple:
        if gid not in self._inputs or gid not in self.groups:
            self._inputs[gid] = self.body(self.groups[gid].members).inputs
        return self._inputs[gid]

    def _key(self, a: int, b: int) -> tuple:
        # NOTE: a group only grows, so (id, size) names its members: most pairs score as last round
        ga, gb = self.groups[a], self.groups[b]
        return (a, len(ga.members), ga.kind, b, len(gb.members), gb.kind)

    def _sideways(self, a: int, b: int, shared: int) -> tuple:
        """The score of a pair that reads the same buffers (`shared` bytes of them), kept as `_scores` keeps
        producer-consumer pairs'."""
        key = self._key(a, b) + (shared,)
        if key not in self._scores:
            self._scores[key] = self.score_fusion(self.groups[a], self.groups[b], False, shared)
        return self._scores[key]

    def candidates(self) -> list[tuple]:
        out = []
        for a, b in self.dag.edges:
            ga, gb = self.groups[a], self.groups[b]
            key = self._key(a, b)
            if key not in self._scores:
                mine = {o for m in ga.members for o in self.nodes[m].outputs}
                reads = set(self.inputs_of(b)) if gb.kind != "extern" else set(self.nodes[b].inputs)
                shared = sum(v.type.nbytes for v in reads & mine)
                self._scores[key] = self.score_fusion(ga, gb, True, shared)
            out.append((self._scores[key], a, b))
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
                    out.append((self._sideways(a, b, v.type.nbytes), a, b))
        by_sig: dict[tuple, list[int]] = {}    # independent work of one shape (dw and db of a norm)
        for g in sorted(self.groups.values(), key=lambda g: g.members[0]):
            if g.kind == "reduction":
                # NOTE: of one module only: the bias gradients of two layers would pull their producers
                # apart (each layer's GELU backward would be computed twice: for the matmuls and the sum)
                red = next(self.nodes[m] for m in g.members if is_reduction(self.nodes[m]))
                module = red.prov.module if red.prov is not None else ""
                by_sig.setdefault((g.sig, red.phase, module), []).append(g.gid)
        for gs in by_sig.values():
            for a, b in zip(gs, gs[1:]):
                if not self.dag.has_edge(a, b) and not self.dag.has_edge(b, a):
                    out.append((self._sideways(a, b, 0), a, b))
        out.sort(key=lambda t: t[0], reverse=True)
        return out

    # -- merging --------------------------------------------------------------------------------
    def merge(self, a: int, b: int) -> None:
        self.topo.merge(a, b)
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

    def run(self, rounds: int = 40) -> None:
        for _ in range(rounds):
            fused = False
            tier = None
            for score, a, b in self.candidates():
                if fused and score[0] != tier:
                    break    # NOTE: score again before a lower kind of pair: what was merged may open better ones
                tier = score[0]
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


def fuse(graph: Graph, foreach: bool = True, epilogues: bool = True, column_splits: bool = True) -> Graph:
    """Graph -> Graph of kernel nodes, extern nodes and host views (see the module docstring);
    `epilogues=False` leaves matmuls alone (a CPU matmul is a BLAS call that takes no epilogue),
    `column_splits=False` keeps column reductions in one stage (`split_reductions`)."""
    n_ops = len(graph.nodes)
    graph = split_reductions(graph, columns=column_splits)
    f = Fuser(graph)
    f.run()
    if epilogues:
        f.fuse_epilogues()
    if foreach:
        pack_foreach(f)
    return emit(f, graph, n_ops)
