"""Matmul epilogues: a pointwise kernel that only finishes a matmul's output
(`act(x @ w + bias) + residual`) joins the matmul as one template launch.

The kernel after the matmul is matched on its structure, in index terms (so the reshapes a
`linear` decomposes into do not get in the way): the matmul's result is read at the kernel's
own flat index, the bias at `index % N` (one value per output column), the residual at the flat
index. What lies between is identified by probing: the chain is evaluated in float64 on a
probe vector and compared with the template's activations (none, relu, gelu_tanh, silu), so any
spelling of GELU's tanh form the decompositions produce is recognized.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from ..graph import Graph, Node, Value
from .fusion_index import Expr, Sym, linearize, unflatten
from .fusion_plan import VIEWS, Refuse, make_plan, node_reads

log = logging.getLogger("tracegrad.fusion")

ACTIVATIONS = {
    "none": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "gelu_tanh": lambda z: 0.5 * z * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3))),
    "silu": lambda z: z / (1.0 + np.exp(-z)),
}
_EVAL = {   # float64 semantics of the elementwise ops an activation is written with (probing only)
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "neg": np.negative, "abs": np.abs,
    "exp": np.exp, "log": np.log, "tanh": np.tanh, "sqrt": np.sqrt, "rsqrt": lambda x: 1.0 / np.sqrt(x),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)), "reciprocal": lambda x: 1.0 / x, "pow": np.power,
    "erf": np.vectorize(math.erf), "maximum": np.maximum, "minimum": np.minimum, "where": np.where,
    "gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal, "eq": np.equal,
    "ne": np.not_equal, "sin": np.sin, "cos": np.cos,
}
PROBE = np.concatenate([np.linspace(-6.0, 6.0, 121), [-30.0, -0.001, 0.0, 0.001, 30.0]])


def _strip(prod, v, ops=VIEWS):
    while v in prod and prod[v].op in ops:
        v = prod[v].inputs[0]
    return v


def _reads(body: Graph, y: Value) -> dict[Value, set]:
    """Every value of the body -> the linear indices (in its own shape) it is read at, from y's."""
    plan = make_plan(body)
    prod = {o: n for n in body.nodes for o in n.outputs}
    x = Expr.sym(Sym("xindex", y.type.numel, "x"))
    out: dict[Value, set] = {}
    stack, seen = [(y, unflatten(x, y.shape), ())], set()

    def loaded(*_):
        raise Refuse("gathers are not epilogues")
    while stack:
        v, idx, cnd = stack.pop()
        if (v, idx, cnd) in seen:
            continue
        seen.add((v, idx, cnd))
        if cnd:
            raise Refuse("padded reads are not epilogues")
        out.setdefault(v, set()).add(linearize(idx, v.shape))
        if v in prod:
            stack.extend(node_reads(prod[v], idx, cnd, plan, loaded))
    return out


def match(mm: Node, body: Graph) -> dict | None:
    """The template's arguments if `body` (a pointwise kernel reading mm's output) is an epilogue."""
    m = mm.out
    if len(body.outputs) != 1 or m not in body.inputs:
        return None
    y = body.outputs[0]
    if y.type.numel != m.type.numel or y.type.dtype != m.type.dtype or m.type.dtype.name not in (
            "float32", "float16", "bfloat16") or m.type.ndim not in (2, 3):
        return None
    a, b = mm.inputs
    if a.type.ndim not in (2, 3) or b.type.ndim not in (2, 3) or (a.type.ndim == b.type.ndim == 3 and
                                                                  a.shape[0] != b.shape[0]):
        return None
    try:
        reads = _reads(body, y)
    except Refuse:
        return None
    x = Expr.sym(Sym("xindex", y.type.numel, "x"))
    n_cols = m.shape[-1]
    if reads.get(m) != {x}:
        return None
    prod = {o: n for n in body.nodes for o in n.outputs}
    users: dict[Value, list[Node]] = {}
    for n in body.nodes:
        for v in n.inputs:
            users.setdefault(v, []).append(n)
    s, residual, used = y, None, set()
    last = prod[y]
    if last.op == "add":      # ... + residual, the residual read where the output is written
        for i in (0, 1):
            r = _strip(prod, last.inputs[i])
            if r in body.inputs and r is not m and r.type.numel == y.type.numel and reads.get(r) == {x} \
                    and r.type.dtype == y.type.dtype:
                residual, s = r, last.inputs[1 - i]
                used.add(id(last))
                break
    # the first op on the matmul's result: a bias add, or already the activation
    first = [n for n in _consumers(users, m, prod)]
    if len(first) != 1:
        return None
    z, bias = m, None
    f = first[0]
    if f.op == "add":
        for i in (0, 1):
            if _strip(prod, f.inputs[i]) is m:
                bv = _strip(prod, f.inputs[1 - i], VIEWS + ("cast",))
                if bv in body.inputs and bv.type.numel == n_cols and reads.get(bv) == {x.mod(n_cols)}:
                    z, bias = f.out, bv
                    used.add(id(f))
    act = _activation(prod, users, z, s, used)
    if act is None:
        return None
    for n in body.nodes:      # nothing else may happen in the kernel (views, constants, the bias's cast)
        if id(n) in used or n.op in VIEWS + ("full",):
            continue
        if n.op == "cast" and bias is not None and _strip(prod, n.inputs[0], VIEWS + ("cast",)) is bias:
            continue
        return None
    return dict(a=a, b=b, bias=bias, residual=residual, activation=act, out=y)


def _consumers(users, v, prod):
    """The non-view nodes that read v (through views)."""
    out, stack = [], [v]
    while stack:
        u = stack.pop()
        for n in users.get(u, ()):
            if n.op in VIEWS:
                stack.append(n.out)
            else:
                out.append(n)
    return out


def _activation(prod, users, z: Value, s: Value, used: set) -> str | None:
    """Which template activation the nodes from z to s compute (probing), or None."""
    chain, stack = [], [s]
    while stack:     # the nodes s depends on, down to z
        v = stack.pop()
        if v is z or v not in prod:
            if v is not z and v not in prod:
                return None        # depends on something other than z
            continue
        n = prod[v]
        if id(n) in {id(c) for c in chain}:
            continue
        if n.op == "full":
            chain.append(n)
            continue
        chain.append(n)
        stack.extend(n.inputs)
    order = {id(n): i for i, n in enumerate(prod.values())}
    chain.sort(key=lambda n: order.get(id(n), 0))
    vals = {z: PROBE}
    with np.errstate(all="ignore"):
        for n in chain:
            if n.op == "full":
                vals[n.out] = np.float64(n.attrs["value"])
                continue
            args = [vals[v] for v in n.inputs]
            if n.op in VIEWS or n.op == "cast":
                vals[n.out] = args[0]
            elif n.op in _EVAL:
                vals[n.out] = _EVAL[n.op](*args)
            else:
                return None
            used.add(id(n))
    got = vals.get(s)
    for name, fn in ACTIVATIONS.items():
        if got is not None and np.allclose(got, fn(PROBE), rtol=1e-6, atol=1e-9):
            return name
    return None


class Epilogues:
    """The part of `fusion.Fuser` that gives matmuls their epilogues; it uses the fuser's groups,
    `nodes`, `cls`, `users`, `outputs`, `walk`, `body`, `merge` and `refuse`."""

    def fuse_epilogues(self) -> None:
        """Matmuls whose one reader is an epilogue the template can apply (bias, activation,
        residual) become one template launch with it."""
        for gid in [g.gid for g in self.groups.values() if g.kind == "extern" and self.nodes[g.gid].op == "matmul"]:
            m = self.nodes[gid].out
            readers = self._readers(m)
            if len(readers) != 1 or self._escapes(m):
                continue
            g = self.groups[readers.pop()]
            if g.kind != "pointwise" or g.parts:
                continue
            spec = match(self.nodes[gid], self.body(g.members))
            if spec is None:
                self.refuse(self.groups[gid], g, "its reader is not a bias/activation/residual epilogue")
                continue
            self.merge(gid, g.gid)
            self.groups[gid].kind = "template"
            self.groups[gid].template = spec
            log.debug("matmul %s takes its epilogue (%s)", m.name, spec["activation"])

    def _readers(self, v: Value) -> set:
        """Groups that read `v`, directly or through views and recomputed scalars."""
        return {self.group_of[i] for u in self.walk(v, lambda i: i not in self.group_of)
                for i in self.users.get(u, ()) if i in self.group_of}

    def _escapes(self, v: Value) -> bool:
        """Whether v (or a view of it) is a graph output."""
        return any(u in self.outputs for u in self.walk(v, lambda i: self.cls[i] == "view"))
