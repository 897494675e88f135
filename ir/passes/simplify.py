"""Simplification passes, each `Graph -> Graph`: dead-code elimination, common-subexpression
elimination, and local rewrites (constant folding of `full`, algebraic identities) from a table.

A rewrite rule looks at one node (with the producers of its inputs) and returns the value that
replaces its output, a new node list to splice in, or None to leave it.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

from ..graph import Graph, Node, Value
from ..ops.registry import get
from ..types import TensorType


def dce(graph: Graph) -> Graph:
    live = set(graph.outputs)
    keep = []
    for n in reversed(graph.nodes):
        # NOTE: a collective stays even when this rank reads none of its results: the other ranks
        # of its group wait for it (under ZeRO-1 a rank updates only the parameters it owns)
        if get(n.op).side_effect or get(n.op).kind == "collective" or any(o in live for o in n.outputs):
            keep.append(n)
            live.update(n.inputs)
    return graph.with_(nodes=tuple(reversed(keep)))


def _subst(n: Node, env: dict) -> Node:
    if any(v in env for v in n.inputs):
        return n.with_(inputs=tuple(env.get(v, v) for v in n.inputs))
    return n


def _finish(graph: Graph, nodes, env) -> Graph:
    return graph.with_(nodes=tuple(nodes), outputs=tuple(env.get(v, v) for v in graph.outputs))


def cse(graph: Graph) -> Graph:
    seen: dict = {}
    env: dict[Value, Value] = {}
    nodes = []
    for n in graph.nodes:
        n = _subst(n, env)
        opdef = get(n.op)
        if opdef.kind in ("random", "collective") or opdef.side_effect:
            nodes.append(n)
            continue
        key = (n.op, tuple(id(v) for v in n.inputs), tuple(sorted((k, _hashable(v)) for k, v in n.attrs.items())),
               tuple(o.type for o in n.outputs))
        if key in seen:
            env.update(zip(n.outputs, seen[key].outputs))
        else:
            seen[key] = n
            nodes.append(n)
    return _finish(graph, nodes, env)


def _hashable(v):
    return (type(v).__name__, v) if not isinstance(v, float) else ("float", repr(v))


# -- rewrites -----------------------------------------------------------------------------------
def _const(prod, v):
    """The scalar a `full` node fills `v` with, or None."""
    n = prod.get(v)
    return n.attrs["value"] if n is not None and n.op == "full" else None


def _is(prod, v, value) -> bool:
    c = _const(prod, v)
    return c is not None and not isinstance(c, bool) and c == value


def _same_type(v: Value, out: Value) -> bool:
    return v.type == out.type


def _full(n: Node, value) -> Node:
    t: TensorType = n.out.type
    return n.with_(op="full", inputs=(), attrs=dict(shape=t.shape, value=value, dtype=t.dtype, device=t.device))


def _fold_binary(n, prod):
    a, b = (_const(prod, v) for v in n.inputs)
    if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
        return None
    f = {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b}.get(n.op)
    if f is None:
        return None
    value = f()
    return [_full(n, int(value) if n.out.type.dtype.is_integer else float(value))]


def _identity_operand(n, prod):
    x, y = n.inputs
    out = n.out
    if n.op in ("add",) and _is(prod, y, 0) and _same_type(x, out):
        return x
    if n.op in ("add",) and _is(prod, x, 0) and _same_type(y, out):
        return y
    if n.op == "sub" and _is(prod, y, 0) and _same_type(x, out):
        return x
    if n.op in ("mul", "div") and _is(prod, y, 1) and _same_type(x, out):
        return x
    if n.op == "mul" and _is(prod, x, 1) and _same_type(y, out):
        return y
    return None


def _movement_of_full(n, prod):
    c = _const(prod, n.inputs[0])
    if c is None:
        return None
    if n.op == "cast":
        c = bool(c) if n.out.type.dtype.name == "bool" else (int(c) if n.out.type.dtype.is_integer else float(c))
    return [_full(n, c)]


def _noop_movement(n, prod):
    x = n.inputs[0]
    if n.op == "permute":   # same type is not enough: a square transpose keeps the type
        return x if tuple(n.attrs["dims"]) == tuple(range(len(x.shape))) else None
    return x if _same_type(x, n.out) else None


def _collapse(n, prod):
    """reshape(reshape(x)) -> reshape(x); permute(permute(x)) -> permute(x); neg(neg(x)) -> x;
    pad(pad(x)) with one fill value -> one pad (a strided slice's backward pads once per axis)."""
    inner = prod.get(n.inputs[0])
    if inner is None or inner.op != n.op:
        return None
    if n.op == "neg":
        return inner.inputs[0]
    if n.op == "pad":
        if inner.attrs["value"] != n.attrs["value"]:
            return None
        pads = tuple((a + c, b + d) for (a, b), (c, d) in zip(inner.attrs["pads"], n.attrs["pads"]))
        return [n.with_(inputs=inner.inputs, attrs=dict(pads=pads, value=n.attrs["value"]))]
    if n.op == "reshape":
        return [n.with_(inputs=inner.inputs)]
    if n.op == "permute":
        d1, d2 = inner.attrs["dims"], n.attrs["dims"]
        return [n.with_(inputs=inner.inputs, attrs=dict(dims=tuple(d1[d] for d in d2)))]
    return None


def _swaps_last_two(n: Node) -> bool:
    if n.op != "permute":
        return False
    nd = len(n.out.shape)
    return nd >= 2 and tuple(n.attrs["dims"]) == tuple(range(nd - 2)) + (nd - 1, nd - 2)


def _transposed_product(n, prod):
    """a @ b -> (b^T @ a^T)^T, made at once in the transposed layout, when a transpose is the
    product's only reader: the product is made in the layout its readers want. A linear layer's
    weight gradient comes out of autodiff as the transpose of x^T @ dy; made as dy^T @ x it is
    [out, in] at once, and the kernels after it (its cast to fp32, the gradient norm) read it
    contiguously instead of with a stride. The new product takes the old one's place, not the
    transpose's: that may come much later (a tied embedding's gradient waits for the embedding's),
    and would keep the product's operands (the logits' gradient) alive until then."""
    t = prod.readers.get(n.out, ())
    if prod.uses[n.out] != 1 or len(t) != 1 or not _swaps_last_two(t[0]) or t[0].inputs[0] is not n.out:
        return None
    nodes, operands = [], []
    for v, side in zip(reversed(n.inputs), "ba"):
        p = prod.get(v)
        if p is not None and _swaps_last_two(p):
            operands.append(p.inputs[0])
            continue
        shape = v.shape[:-2] + (v.shape[-1], v.shape[-2])
        vt = Value(f"{t[0].out.name}_{side}T", v.type.with_(shape=shape))
        nd = len(shape)
        nodes.append(t[0].with_(inputs=(v,), outputs=(vt,), attrs=dict(dims=tuple(range(nd - 2)) + (nd - 1, nd - 2))))
        operands.append(vt)
    return nodes + [n.with_(inputs=tuple(operands), outputs=(t[0].out,))]


def _add_of_pads(n, prod):
    """pad(x) + pad(y), zero-padded to adjacent ranges of one axis -> pad(concat(x, y)): the
    backward of a split (`q, k, v = qkv.split(C, -1)`) becomes one concat instead of pads and adds."""
    a, b = (prod.get(v) for v in n.inputs)
    if a is None or b is None or a.op != "pad" or b.op != "pad" or not (
            a.attrs["value"] == b.attrs["value"] == 0.0 and a.out.type == b.out.type == n.out.type):
        return None
    pa, pb = a.attrs["pads"], b.attrs["pads"]
    axes = [i for i, (x, y) in enumerate(zip(pa, pb)) if x != y]
    if len(axes) != 1:
        return None
    ax, size = axes[0], n.out.shape[axes[0]]
    if size - pa[ax][1] == pb[ax][0]:
        first, second = a, b
    elif size - pb[ax][1] == pa[ax][0]:
        first, second = b, a
    else:
        return None
    parts = []
    for m in (first, second):    # concat(concat(x, y), z) -> concat(x, y, z)
        inner = prod.get(m.inputs[0])
        same_axis = inner is not None and inner.op == "concat" and inner.attrs["axis"] == ax
        parts += list(inner.inputs) if same_axis else [m.inputs[0]]
    shape = list(parts[0].shape)     # NOTE: the other axes may be padded too (equally): not the sum's shape
    shape[ax] = sum(v.shape[ax] for v in parts)
    cat = Value(f"{n.out.name}_cat", n.out.type.with_(shape=tuple(shape)))
    pads = tuple((first.attrs["pads"][i][0], second.attrs["pads"][i][1]) if i == ax else p for i, p in enumerate(pa))
    return [n.with_(op="concat", inputs=tuple(parts), outputs=(cat,), attrs=dict(axis=ax)),
            n.with_(op="pad", inputs=(cat,), attrs=dict(pads=pads, value=0.0))]


RULES: dict[str, list[Callable]] = {
    "add": [_fold_binary, _identity_operand, _add_of_pads],
    "sub": [_fold_binary, _identity_operand],
    "mul": [_fold_binary, _identity_operand],
    "div": [_identity_operand],
    "reshape": [_movement_of_full, _noop_movement, _collapse],
    "expand": [_movement_of_full, _noop_movement],
    "permute": [_movement_of_full, _noop_movement, _collapse],
    "matmul": [_transposed_product],
    "cast": [_movement_of_full, _noop_movement],
    "pad": [_noop_movement, _collapse],
    "neg": [_collapse],
    "stop_gradient": [lambda n, prod: n.inputs[0]],
}


class Producers(dict):
    """Each value's producer, as rewritten so far; `uses` counts the nodes and graph outputs that
    read each value, `readers` lists the nodes (a rule may remake a producer that only the node it
    rewrites reads, or make a reader's value early, in the producer's place)."""

    def __init__(self, graph: Graph):
        super().__init__()
        self.uses = Counter(v for n in graph.nodes for v in n.inputs)
        self.uses.update(graph.outputs)
        self.readers: dict[Value, list[Node]] = {}      # the nodes reading each value, as they were
        for n in graph.nodes:
            for v in dict.fromkeys(n.inputs):
                self.readers.setdefault(v, []).append(n)


def rewrite(graph: Graph, rules: dict[str, list[Callable]] = RULES) -> Graph:
    """Apply `rules` once, front to back (a rule sees the already rewritten producers)."""
    env: dict[Value, Value] = {}
    prod = Producers(graph)
    nodes = []
    for n in graph.nodes:
        if n.outputs and n.outputs[0] in prod:
            continue     # made already, earlier (see _transposed_product)
        n = _subst(n, env)
        result = None
        for rule in rules.get(n.op, ()):
            result = rule(n, prod)
            if result is not None:
                break
        if isinstance(result, Value):
            env[n.out] = result
            prod.uses[result] += prod.uses[n.out]
            continue
        for m in (result or [n]):
            nodes.append(m)
            prod.update((o, m) for o in m.outputs)
    return _finish(graph, nodes, env)


def simplify(graph: Graph) -> Graph:
    """rewrite -> cse -> dce, until nothing changes (at most a few rounds)."""
    for _ in range(4):
        before = len(graph.nodes)
        graph = dce(cse(rewrite(graph)))
        if len(graph.nodes) == before:
            break
    return graph

