"""Sharding rules: for each op, how its inputs must lie so every rank can run it on its own
blocks, and how the results lie. `apply_rule(b, op, inputs, attrs, global_types)` converts the
inputs (through `b.to`), emits the local op and returns the results.

The rules follow Megatron-LM (Shoeybi et al. 2019) without naming it: a matmul of a replicated
activation and a column-sharded weight is sharded, one of a sharded activation and a row-sharded
weight is partial, and a partial value stays partial through linear ops (add of partials, scaling
by a replicated value, reshapes) until a nonlinear op needs its sum: then one `all_reduce`.
A composite whose sharded axis it cannot keep is decomposed into primitives that can (the
vocabulary-parallel cross-entropy is `cross_entropy`'s own decomposition under these rules).
"""
from __future__ import annotations

from ...ops.registry import ELEMENTWISE, get
from .builder import DValue, ParallelPlanError, ShardBuilder
from .spec import P, R, S, reshape_spec

LINEAR_UNARY = ("neg", "cast")
ROWWISE = {"rms_norm": "weight", "layer_norm": "weight", "softmax": None, "log_softmax": None}  # None: attrs["axis"]
POINTWISE_COMPOSITES = ("gelu", "silu", "relu")
HEADWISE = ("scaled_dot_product_attention", "scaled_dot_product_attention_bwd")   # batch, heads axes


def apply_rule(b: ShardBuilder, op: str, ins: list[DValue], attrs: dict, gtypes) -> list[DValue]:
    opdef = get(op)
    if op in ("send", "recv") and b.local_means:
        return _ring_message(b, op, ins, attrs, gtypes)
    # NOTE: a partial value already summed for another reader is read summed: a second all_reduce
    # of it later (in the backward, say) would move the same bytes again
    ins = [b.summed(h) for h in ins]
    if all(h.spec.kind == "R" for h in ins):
        return b.local(op, ins, attrs, [R] * len(gtypes), gtypes)
    if opdef.is_elementwise:
        return _elementwise(b, op, ins, attrs, gtypes)
    rule = RULES.get(op) or RULES.get(opdef.kind)
    if rule is not None:
        return rule(b, op, ins, attrs, gtypes)
    if opdef.is_composite:        # decompose it under these rules
        outs = opdef.decompose(b, *ins, **attrs)
        return list(outs) if isinstance(outs, tuple) else [outs]
    return _replicated(b, op, ins, attrs, gtypes)


def _replicated(b, op, ins, attrs, gtypes):
    return b.local(op, [b.to(h, R) for h in ins], attrs, [R] * len(gtypes), gtypes)


def _elementwise(b, op, ins, attrs, gtypes):
    out = gtypes[0]
    nd = len(out.shape)
    kinds = [h.spec.kind for h in ins]
    if op in ("add", "sub") and sorted(kinds) == ["P", "R"] and ins[kinds.index("P")].type == out:
        # NOTE: partial + replicated is partial when one rank alone adds the replicated part
        if b.r == 0:
            return b.local(op, ins, attrs, [P], gtypes)
        p = ins[kinds.index("P")]
        if op == "sub" and kinds[1] == "P":
            return b.local("neg", [p], {}, [P], gtypes)
        return [DValue(p.local, P, out, p.origin)]     # a handle of its own: summed apart from p
    if "P" in kinds:
        linear = (op in LINEAR_UNARY or (op in ("add", "sub") and all(k == "P" for k in kinds))
                  or (op == "mul" and kinds.count("P") == 1 and kinds.count("R") == 1)
                  or (op == "div" and kinds == ["P", "R"]))
        if linear:
            return b.local(op, ins, attrs, [P], gtypes)
        ins = [b.to(h, R) if h.spec.kind == "P" else h for h in ins]
    sharded = next((h for h in ins if h.spec.kind == "S"), None)
    if sharded is None:
        return b.local(op, ins, attrs, [R], gtypes)
    od = sharded.spec.dim + nd - len(sharded.type.shape)
    g = sharded.spec.groups
    conv = []
    for h in ins:
        shape = h.type.shape
        d = od - (nd - len(shape))
        if d < 0 or shape[d] == 1:     # broadcast along the sharded axis: every rank uses all of it
            conv.append(b.to(h, R))
        else:
            conv.append(b.to(h, S(d, g)))
    return b.local(op, conv, attrs, [S(od, g)], gtypes)


def _reduce(b, op, ins, attrs, gtypes):
    (x,) = ins
    nd = len(x.type.shape)
    axes = tuple(a % nd for a in (attrs["axes"] if op != "argmax" else (attrs["axis"],)))
    keep = attrs["keepdim"]
    if x.spec.kind == "P":
        if op == "sum":
            return b.local(op, ins, attrs, [P], gtypes)
        return _replicated(b, op, ins, attrs, gtypes)
    d = x.spec.dim
    if d not in axes:
        od = d if keep else d - sum(a < d for a in axes)
        return b.local(op, ins, attrs, [S(od, x.spec.groups)], gtypes)
    if op == "sum":
        return b.local(op, ins, attrs, [P], gtypes)
    if op == "max":       # the max of the ranks' maxima: one small all_reduce, no gather
        (m,) = b.local(op, ins, attrs, [R], gtypes)
        return [DValue(b.combine(m.local, "max"), R, m.type, m.origin)]
    return _replicated(b, op, ins, attrs, gtypes)


def _reshape(b, op, ins, attrs, gtypes):
    (x,) = ins
    shape = tuple(attrs["shape"])
    if x.spec.kind == "P":
        return b.local(op, ins, attrs, [P], gtypes)
    spec = reshape_spec(x.spec, x.type.shape, shape, b.n)
    if spec is None:
        if b.node is not None and b.node.phase == "forward" and x.origin:
            raise ParallelPlanError(
                f"{b.at()}: reshape {list(x.type.shape)} -> {list(shape)} of the output of {x.origin}, "
                f"which is split over {b.n} ranks along axis {x.spec.dim}: no axis of the result splits the same "
                f"way (e.g. a head count that {b.n} does not divide). Use a tp size that divides it, or keep "
                f"{x.origin} whole: plan={{'{x.origin}': 'replicate'}}")
        return _replicated(b, op, ins, attrs, gtypes)
    return b.local(op, ins, dict(attrs, shape=spec.local(shape, b.n)), [spec], gtypes)


def _permute(b, op, ins, attrs, gtypes):
    (x,) = ins
    assert x.spec.kind == "P" or x.spec.dim in attrs["dims"], (x, b.node)
    spec = x.spec if x.spec.kind == "P" else S(tuple(attrs["dims"]).index(x.spec.dim), x.spec.groups)
    return b.local(op, ins, attrs, [spec], gtypes)


def _expand(b, op, ins, attrs, gtypes):
    (x,) = ins
    shape = tuple(attrs["shape"])
    if x.spec.kind == "P":
        return b.local(op, ins, attrs, [P], gtypes)
    od = x.spec.dim + len(shape) - len(x.type.shape)
    spec = S(od, x.spec.groups)
    return b.local(op, ins, dict(attrs, shape=spec.local(shape, b.n)), [spec], gtypes)


def _slice(b, op, ins, attrs, gtypes):
    (x,) = ins
    if x.spec.kind == "P":
        return b.local(op, ins, attrs, [P], gtypes)
    d, g = x.spec.dim, x.spec.groups
    size = x.type.shape[d]
    start, stop, step = attrs["starts"][d], attrs["stops"][d], attrs["steps"][d]
    local = size // b.n
    if (start, stop, step) == (0, size, 1):
        lo, hi, spec = 0, local, x.spec
    elif g > 1 and step == 1 and stop - start == size // g and start % (size // g) == 0:
        j, c = start // (size // g), local // g       # chunk j of g: every rank's block of it
        lo, hi, spec = j * c, (j + 1) * c, S(d)
    else:
        return _replicated(b, op, ins, attrs, gtypes)
    new = dict(attrs, starts=_at(attrs["starts"], d, lo), stops=_at(attrs["stops"], d, hi))
    return b.local(op, ins, new, [spec], gtypes)


def _at(t, i, v):
    return tuple(v if j == i else x for j, x in enumerate(t))


def _pad(b, op, ins, attrs, gtypes):
    (x,) = ins
    if x.spec.kind == "P" and attrs["value"] == 0:
        return b.local(op, ins, attrs, [P], gtypes)
    if x.spec.kind == "S" and tuple(attrs["pads"][x.spec.dim]) == (0, 0):
        return b.local(op, ins, attrs, [x.spec], gtypes)
    if x.spec.kind == "S" and x.spec.groups == 1:     # a part back into its place among g parts (q|k|v)
        d, size = x.spec.dim, x.type.shape[x.spec.dim]
        lo, hi = attrs["pads"][d]
        if lo % size == 0 and hi % size == 0:
            pads = tuple((lo // b.n, hi // b.n) if i == d else p for i, p in enumerate(attrs["pads"]))
            return b.local(op, ins, dict(attrs, pads=pads), [S(d, (lo + size + hi) // size)], gtypes)
    return _replicated(b, op, ins, attrs, gtypes)


def _concat(b, op, ins, attrs, gtypes):
    nd = len(gtypes[0].shape)
    axis = attrs["axis"] % nd
    if all(h.spec.kind == "P" for h in ins):
        return b.local(op, ins, attrs, [P], gtypes)
    sharded = next((h for h in ins if h.spec.kind == "S"), None)
    if sharded is None or sharded.spec.dim == axis:
        return _replicated(b, op, ins, attrs, gtypes)
    return b.local(op, [b.to(h, sharded.spec) for h in ins], attrs, [sharded.spec], gtypes)


def _matmul(b, op, ins, attrs, gtypes):
    a, w = ins
    if "P" in (a.spec.kind, w.spec.kind):
        if {a.spec.kind, w.spec.kind} == {"P", "R"}:
            return b.local(op, ins, attrs, [P], gtypes)
        a, w = (b.to(h, R) if h.spec.kind == "P" else h for h in (a, w))
        if a.spec.kind == w.spec.kind == "R":
            return b.local(op, [a, w], attrs, [R], gtypes)
    na, nw, no = len(a.type.shape), len(w.type.shape), len(gtypes[0].shape)
    ra = _role(a, na, "M", "K")
    rw = _role(w, nw, "K", "N")
    if ra == "K" and rw != "K":
        w = b.to(w, S(nw - 2, a.spec.groups))
        rw = "K"
    elif rw == "K" and ra != "K":
        a = b.to(a, S(na - 1, w.spec.groups))
        ra = "K"
    if ra == "K":
        return b.local(op, [a, w], attrs, [P], gtypes)
    if ra == "M":
        return b.local(op, [a, b.to(w, R)], attrs, [S(no - 2, a.spec.groups)], gtypes)
    if rw == "N":
        return b.local(op, [b.to(a, R), w], attrs, [S(no - 1, w.spec.groups)], gtypes)
    # a batch axis: both operands split along it where they have it
    h = a if isinstance(ra, int) else w
    od, g = h.spec.dim + no - len(h.type.shape), h.spec.groups
    conv = []
    for x in (a, w):
        d = od - (no - len(x.type.shape))
        conv.append(b.to(x, R) if d < 0 or x.type.shape[d] == 1 else b.to(x, S(d, g)))
    return b.local(op, conv, attrs, [S(od, g)], gtypes)


def _role(h, nd, second_last, last):
    if h.spec.kind != "S":
        return None
    d = h.spec.dim
    return last if d == nd - 1 else second_last if d == nd - 2 else d


def _index(b, op, ins, attrs, gtypes):
    """take (embedding rows) and gather (a logit per row): a table split along the indexed axis
    is looked up locally and masked (the vocabulary-parallel embedding and cross-entropy)."""
    x, idx = ins
    axis = attrs["axis"] % len(x.type.shape)
    if idx.spec.kind == "S" and x.spec.kind != "P":     # rows of the indices (a batch split)
        d, g = idx.spec.dim, idx.spec.groups
        if op == "take":
            return b.local(op, [b.to(x, R), idx], attrs, [S(axis + d, g)], gtypes)
        if d != axis:
            return b.local(op, [b.to(x, idx.spec), idx], attrs, [idx.spec], gtypes)
    idx = b.to(idx, R)
    if x.spec.kind == "P":
        return b.local(op, [x, idx], attrs, [P], gtypes)
    if x.spec.kind == "R":
        return b.local(op, [x, idx], attrs, [R], gtypes)
    d = x.spec.dim
    if d != axis or x.spec.groups != 1:
        if op == "gather":
            return b.local(op, [x, b.to(idx, S(d))], attrs, [S(d)], gtypes) if d != axis else \
                _replicated(b, op, [x, idx], attrs, gtypes)
        od = d if d < axis else d + len(idx.type.shape) - 1
        return b.local(op, [x, idx], attrs, [S(od, x.spec.groups)], gtypes)
    o = b.out
    rows = x.type.shape[d] // b.n
    i = o.sub(idx.local, b.rank_offset(x.type.shape[d]))
    ok = o.logical_and(o.ge(i, 0), o.lt(i, rows))
    (y,) = b.local(op, [x, b.wrap(o.where(ok, i, 0))], attrs, [P], gtypes)
    yt = y.local.type
    if op == "take":
        ok = o.reshape(ok, shape=(1,) * axis + idx.type.shape + (1,) * (len(yt.shape) - axis - len(idx.type.shape)))
    masked = o.mul(y.local, o.cast(ok, dtype=yt.dtype))
    return [DValue(masked, P, y.type, y.origin)]


def _index_add(b, op, ins, attrs, gtypes):
    """index_add / scatter_add of split rows into a whole table: each rank's sum is partial.
    NOTE: the base counts once per rank; the VJPs that emit these start from zeros."""
    x, idx, src = ins
    if x.spec.kind == "R" and idx.spec.kind == "S":
        d = idx.spec.dim
        sd = attrs["axis"] % len(x.type.shape) + d if op == "index_add" else d
        return b.local(op, [x, idx, b.to(src, S(sd, idx.spec.groups))], attrs, [P], gtypes)
    return _replicated(b, op, ins, attrs, gtypes)


def _ring_message(b, op, ins, attrs, gtypes):
    """send/recv of a cp ring inside a micro-batch: the micro-batch's rows of the message.
    NOTE: every rank runs the same program, so what rank r sends at this point is split as what
    rank r+1 receives at its same point: by rows, as the sender's value is."""
    if op == "send":
        return b.local(op, [b.to(ins[0], S(0)) if ins[0].type.shape[0] % b.n == 0 else ins[0]], attrs, [],
                       gtypes)
    t = gtypes[0]
    spec = S(0) if t.shape and t.shape[0] % b.n == 0 else R
    return b.local(op, [], dict(attrs, shape=spec.local(t.shape, b.n)), [spec], gtypes)


def _collective(b, op, ins, attrs, gtypes):
    (x,) = ins       # a collective over another mesh axis: elementwise across this one's parts
    if op == "all_reduce" and (x.spec.kind == "S" or attrs["op"] in ("sum", "mean")):
        return b.local(op, ins, attrs, [x.spec], gtypes)
    if op in ("all_gather", "reduce_scatter") and x.spec.kind == "S" and x.spec.dim != attrs["axis"] % len(x.type.shape):
        return b.local(op, ins, attrs, [x.spec], gtypes)
    return _replicated(b, op, ins, attrs, gtypes)


def _rowwise(b, op, ins, attrs, gtypes):
    x = ins[0] = b.to(ins[0], R) if ins[0].spec.kind == "P" else ins[0]
    if all(h.spec.kind == "R" for h in ins):
        return _replicated(b, op, ins, attrs, gtypes)
    nd = len(x.type.shape)
    first = nd - len(ins[1].type.shape) if ROWWISE[op] is not None else attrs["axis"] % nd
    keeps = x.spec.dim < first if ROWWISE[op] is not None else x.spec.dim != first
    if x.spec.kind == "S" and keeps:
        rest = [b.to(h, R) for h in ins[1:]]
        return b.local(op, [x, *rest], attrs, [x.spec] * len(gtypes), gtypes)
    return _decompose(b, op, ins, attrs)


def _pointwise(b, op, ins, attrs, gtypes):
    if ins[0].spec.kind != "P":
        return b.local(op, ins, attrs, [ins[0].spec], gtypes)
    return _decompose(b, op, ins, attrs)


def _headwise(b, op, ins, attrs, gtypes):
    spec = next(h.spec for h in ins if h.spec.kind != "R")
    n_in = 3 if op == "scaled_dot_product_attention" else 6
    if spec.kind == "S" and spec.dim == 2 and len(ins) == n_in and spec.groups == 1:   # the sequence: a ring
        from .ring import ring_attention, ring_attention_bwd
        return (ring_attention if n_in == 3 else ring_attention_bwd)(b, ins, attrs, gtypes)
    if spec.kind == "S" and spec.dim in (0, 1):
        conv = [b.to(h, spec) for h in ins]
        return b.local(op, conv, attrs, [spec] * len(gtypes), gtypes)
    return _decompose(b, op, ins, attrs)


def _rowwise_loss(b, op, ins, attrs, gtypes):
    """cross_entropy over micro-batches (rows split, `local_means`): each part's own mean."""
    if b.local_means and all(h.spec.kind != "S" or h.spec.dim == 0 for h in ins):
        ins = [b.to(h, S(0)) if len(h.type.shape) and h.type.shape[0] == ins[0].type.shape[0] else b.to(h, R)
               for h in ins]
        specs = [S(0) if len(t.shape) and t.shape[0] == ins[0].type.shape[0] else R for t in gtypes]
        return b.local(op, ins, attrs, specs, gtypes)
    return _decompose(b, op, ins, attrs)


def _marker(b, op, ins, attrs, gtypes):
    """stop_gradient and the like: the identity on values, so on each rank's part as it lies."""
    return b.local(op, ins, attrs, [ins[0].spec] * len(gtypes), gtypes)


def _decompose(b, op, ins, attrs):
    outs = get(op).decompose(b, *ins, **attrs)
    return list(outs) if isinstance(outs, tuple) else [outs]


RULES = {"reduce": _reduce, "reshape": _reshape, "permute": _permute, "expand": _expand, "slice": _slice,
         "pad": _pad, "concat": _concat, "matmul": _matmul, "take": _index, "gather": _index,
         "collective": _collective, "marker": _marker, **{k: _rowwise for k in ROWWISE},
         **{k: _pointwise for k in POINTWISE_COMPOSITES}, **{k: _headwise for k in HEADWISE},
         "index_add": _index_add, "scatter_add": _index_add, "cross_entropy": _rowwise_loss, "cross_entropy_bwd": _rowwise_loss}
assert not set(RULES) & set(ELEMENTWISE)
