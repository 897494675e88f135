"""The iteration plan of one fused kernel, and the walk that checks a group can run as one.

A kernel iterates a *domain*: a shape `D` and the axes `A` it reduces (none for a pointwise
kernel). The flat index `xindex` runs over D's kept axes (one lane per output row), `rindex`
over the reduced axes. Every value of the group is computed at an index derived from those
two; `node_reads` says which index each input is read at. A reduction can only be computed
inside the kernel where it is read at an index free of `rindex` (it is one value per row).

    D = [4, 8], A = (1,)    softmax rows: xindex in [0, 4), rindex in [0, 8)
    t1 = div(e, s)          at (xindex, rindex); s at (xindex, 0): free of rindex, legal

The same walk, with a different callback for loaded indices, drives the Triton code generator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ..graph import Graph, Node, Value
from ..ops.registry import ELEMENTWISE, get
from .fusion_index import (Expr, Index, Sym, broadcast_index, concat_pieces, depends_on, linearize,
                           movement_index, reduce_axes, reduce_input_index, unflatten)

VIEWS = ("reshape", "permute", "expand", "slice", "stop_gradient")
CONSTS = ("full", "iota")
REDUCTIONS = ("sum", "max", "argmax")
INDEXED = ("pad", "concat", "take", "gather")
RANDOM = ("rand_uniform", "rand_normal")


class Refuse(Exception):
    """A group cannot be one kernel; the message says why (it goes to the fusion log)."""


def rnumel_of(n: Node) -> int:
    return math.prod(n.inputs[0].shape[a] for a in reduce_axes(n))


def is_reduction(n: Node) -> bool:
    """A reduction that needs a reduction loop (over one element it is pointwise)."""
    return n.op in REDUCTIONS and rnumel_of(n) > 1


def after_reduction(prod: dict, v) -> bool:
    """Whether a reduction of a kernel body (`prod`: each value's producer in it) feeds v."""
    seen, todo = set(), [v]
    while todo:
        n = prod.get(todo.pop())
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        if is_reduction(n):
            return True
        todo.extend(n.inputs)
    return False


def is_pointwise(n: Node) -> bool:
    return (get(n.op).kind in ELEMENTWISE or n.op in VIEWS + CONSTS + INDEXED + RANDOM
            or (n.op in REDUCTIONS and not is_reduction(n)))


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


def rng_state_out(n: Node, v: Value) -> bool:
    return n.op in RANDOM and v is n.outputs[1]


@dataclass
class KernelPlan:
    kind: str                     # "pointwise" | "reduction"
    domain: tuple[int, ...]
    raxes: tuple[int, ...]
    xnumel: int
    rnumel: int
    xsym: Sym
    rsym: Sym | None
    tile: int | None = None       # CPU loops over rows of `tile`: x is `xo * tile + xi`, not one xindex

    @property
    def xshape(self) -> tuple[int, ...]:
        return tuple(n for d, n in enumerate(self.domain) if d not in self.raxes)

    @property
    def rshape(self) -> tuple[int, ...]:
        return tuple(self.domain[a] for a in self.raxes)

    @property
    def outer(self) -> bool:
        """A reduction that keeps the innermost (non-1) axis, a column sum: lanes along that axis read
        contiguous memory, so the kernel wants many x lanes and few r lanes per block."""
        dims = [d for d, n in enumerate(self.domain) if n > 1]
        return self.kind == "reduction" and bool(dims) and dims[-1] not in self.raxes

    def x_index(self) -> Index:
        if self.tile:    # NOTE: split so, `xindex // 1764` simplifies to `xo // 9`: no division a lane
            xo, xi = Sym("xo", self.xnumel // self.tile, "x"), Sym("xi", self.tile, "x")
            return unflatten(Expr.sym(xo) * self.tile + Expr.sym(xi), self.xshape)
        return unflatten(Expr.sym(self.xsym), self.xshape)

    def r_index(self) -> Index:
        return unflatten(Expr.sym(self.rsym), self.rshape) if self.rsym else ()

    def domain_index(self) -> Index:
        x, r = iter(self.x_index()), iter(self.r_index())
        return tuple(next(r) if d in self.raxes else next(x) for d in range(len(self.domain)))

    def store_index(self, v: Value) -> tuple[Index, bool]:
        """(index, is_row): where output `v` is written; row outputs have one element per lane."""
        n = v.type.numel
        if n == self.xnumel * self.rnumel:
            return unflatten(linearize(self.domain_index(), self.domain), v.shape), self.rnumel == 1
        if n == self.xnumel:
            return unflatten(linearize(self.x_index(), self.xshape), v.shape), True
        raise Refuse(f"{v.name} has {n} elements; the kernel iterates {self.xnumel} x {self.rnumel}")


def make_plan(body: Graph) -> KernelPlan:
    """The domain of a group: its first reduction's input and axes, else its biggest output."""
    reds = [n for n in body.nodes if is_reduction(n)]
    if reds:
        first = reds[0]
        dom, axes = first.inputs[0].shape, reduce_axes(first)
        x, r = first.out.type.numel, rnumel_of(first)
        for n in reds[1:]:
            if (n.out.type.numel, rnumel_of(n)) != (x, r):
                raise Refuse(f"reductions over different shapes: {first.out.name} reduces {x} rows of {r}, "
                             f"{n.out.name} {n.out.type.numel} rows of {rnumel_of(n)}")
        return KernelPlan("reduction", tuple(dom), tuple(axes), x, r, Sym("xindex", x, "x"), Sym("rindex", r, "r"))
    prod = {o: n for n in body.nodes for o in n.outputs}
    outs = [v for v in body.outputs if not rng_state_out(prod[v], v)] if body.outputs else []
    if not outs:
        raise Refuse("nothing to compute")
    dom = max(outs, key=lambda v: (v.type.ndim, v.type.numel)).shape
    numel = math.prod(dom)
    return KernelPlan("pointwise", tuple(dom), (), numel, 1, Sym("xindex", numel, "x"), None)


Loaded = Callable[[Value, Index, tuple, int], Sym]   # (index tensor, its index, cond, extent) -> loaded symbol


def node_reads(n: Node, idx: Index, cnd: tuple, plan: KernelPlan, loaded: Loaded) -> list[tuple[Value, Index, tuple]]:
    """Which elements of its inputs node `n` reads to produce its output at `idx` under `cnd`."""
    op = n.op
    if get(op).kind in ELEMENTWISE:
        return [(v, broadcast_index(idx, n.out.shape, v.shape), cnd) for v in n.inputs]
    if op in VIEWS or op == "pad":
        sub, extra = movement_index(n, idx)
        return [(n.inputs[0], sub, cnd + extra)]
    if op == "concat":
        return [(v, sub, cnd + c) for v, (sub, c) in zip(n.inputs, concat_pieces(n, idx))]
    if op in REDUCTIONS:
        if not is_reduction(n):
            zeros = tuple(Expr.const(0) for _ in reduce_axes(n))
            return [(n.inputs[0], reduce_input_index(n, idx, zeros), cnd)]
        if depends_on(idx, "r") or any("r" in c.e.tags() for c in cnd):
            raise Refuse(f"the reduction {n.out.name} ({op}) is read at an index that varies along its own "
                         f"reduced axes, so it is not one value per row")
        if plan.rsym is None or rnumel_of(n) != plan.rnumel:
            raise Refuse(f"{n.out.name} reduces {rnumel_of(n)} elements per row, the kernel {plan.rnumel}")
        rsub = unflatten(Expr.sym(plan.rsym), tuple(n.inputs[0].shape[a] for a in reduce_axes(n)))
        return [(n.inputs[0], reduce_input_index(n, idx, rsub), cnd)]
    if op in ("take", "gather"):
        x, ix = n.inputs
        axis = n.attrs["axis"]
        if op == "take":
            k = ix.type.ndim
            sym = loaded(ix, tuple(idx[axis:axis + k]), cnd, x.shape[axis])
            sub = tuple(idx[:axis]) + (Expr.sym(sym),) + tuple(idx[axis + k:])
            return [(ix, tuple(idx[axis:axis + k]), cnd), (x, sub, cnd)]
        sym = loaded(ix, idx, cnd, x.shape[axis])
        sub = tuple(Expr.sym(sym) if d == axis else e for d, e in enumerate(idx))
        return [(ix, idx, cnd), (x, sub, cnd)]
    if op in CONSTS:
        return []
    if op in RANDOM:
        return [(n.inputs[0], (), ())]
    raise Refuse(f"{op} cannot run inside a generated kernel")


def index_tags(idx: Index, cnd: tuple = ()) -> str:
    """Which masks ("x", "r") lanes at this index need."""
    tags = set()
    for e in idx:
        tags |= e.tags()
    for c in cnd:
        tags |= c.e.tags()
    return "".join(sorted(tags))


def check_group(body: Graph) -> KernelPlan:
    """Walk the whole group from its outputs; raise Refuse if it cannot be one kernel."""
    plan = make_plan(body)
    prod = {o: n for n in body.nodes for o in n.outputs}
    syms: dict = {}

    def loaded(v, idx, cnd, size):
        key = (v, idx, cnd)
        if key not in syms:
            syms[key] = Sym(f"ld{len(syms)}", size, index_tags(idx, cnd))
        return syms[key]

    seen: set = set()
    stack = []
    for v in body.outputs:
        n = prod[v]
        if rng_state_out(n, v):
            stack.append((n.inputs[0], (), ()))
            continue
        idx, _ = plan.store_index(v)
        stack.append((v, idx, ()))
    budget = 20000
    while stack:
        v, idx, cnd = stack.pop()
        n = prod.get(v)
        if n is None or (v, idx, cnd) in seen:
            continue
        seen.add((v, idx, cnd))
        budget -= 1
        if budget < 0:
            raise Refuse("the group reads its values at too many different indices")
        if n.op in RANDOM and v is n.outputs[1]:
            stack.append((n.inputs[0], (), ()))
            continue
        stack.extend(node_reads(n, idx, cnd, plan, loaded))
    return plan
