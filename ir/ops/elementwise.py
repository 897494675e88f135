"""Elementwise primitives: unary math, binary arithmetic and comparisons, `where`, `cast`.

Binary ops broadcast (numpy rules) but take operands of one dtype: the frontend inserts casts,
so the IR always says where a conversion happens. A VJP may return a thunk for an input: the
autodiff driver calls it only when that input needs a gradient.
"""
from __future__ import annotations

import math

from ..types import TensorType, bool_
from .registry import defop, fail, vjp


def broadcast_shapes(op: str, types, *shapes) -> tuple[int, ...]:
    nd = max(len(s) for s in shapes)
    out = []
    for i in range(nd):
        dims = {s[i - nd + len(s)] for s in shapes if i - nd + len(s) >= 0} - {1}
        if len(dims) > 1:
            fail(op, types, f"shapes {' and '.join(str(list(s)) for s in shapes)} do not broadcast "
                            f"(dimension {i - nd}: {sorted(dims)})")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _same_device(op, types):
    devs = {t.device for t in types}
    if len(devs) > 1:
        fail(op, types, f"inputs are on different devices {sorted(devs)}; move them with .to(device)")
    return types[0].device


# -- unary ------------------------------------------------------------------------------------
def _unary(name, float_only=True, out_dtype=None, nondiff=False):
    def infer(ts):
        (t,) = ts
        if float_only and not t.dtype.is_floating:
            fail(name, ts, f"needs a floating-point input, got {t.dtype.name}; cast with .float()")
        return t.with_(dtype=out_dtype or t.dtype)
    return defop(name, "unary", infer, 1, nondiff=nondiff)


for _name in ("exp", "log", "sqrt", "rsqrt", "tanh", "sin", "cos", "erf", "sigmoid", "reciprocal"):
    _unary(_name)
_unary("neg", float_only=False)
_unary("abs", float_only=False)
_unary("sign", float_only=False, nondiff=True)
_unary("floor", nondiff=True)
_unary("logical_not", float_only=False, out_dtype=bool_, nondiff=True)
_unary("isnan", float_only=False, out_dtype=bool_, nondiff=True)

vjp("neg")(lambda b, n, gs: (b.neg(gs[0]),))
vjp("exp")(lambda b, n, gs: (b.mul(gs[0], n.outputs[0]),))
vjp("log")(lambda b, n, gs: (b.div(gs[0], n.inputs[0]),))
vjp("sqrt")(lambda b, n, gs: (b.div(b.mul(gs[0], 0.5), n.outputs[0]),))
# d/dx x^-1/2 = -1/2 y^3
vjp("rsqrt")(lambda b, n, gs: (b.mul(b.mul(gs[0], -0.5), b.mul(n.outputs[0], b.mul(n.outputs[0], n.outputs[0]))),))
vjp("tanh")(lambda b, n, gs: (b.mul(gs[0], b.sub(1.0, b.mul(n.outputs[0], n.outputs[0]))),))
vjp("sin")(lambda b, n, gs: (b.mul(gs[0], b.cos(n.inputs[0])),))
vjp("cos")(lambda b, n, gs: (b.neg(b.mul(gs[0], b.sin(n.inputs[0]))),))
vjp("abs")(lambda b, n, gs: (b.mul(gs[0], b.sign(n.inputs[0])),))
# d/dx erf(x) = 2/sqrt(pi) exp(-x^2)
vjp("erf")(lambda b, n, gs: (b.mul(gs[0], b.mul(2.0 / math.sqrt(math.pi),
                                                  b.exp(b.neg(b.mul(n.inputs[0], n.inputs[0]))))),))
vjp("sigmoid")(lambda b, n, gs: (b.mul(gs[0], b.mul(n.outputs[0], b.sub(1.0, n.outputs[0]))),))
vjp("reciprocal")(lambda b, n, gs: (b.neg(b.mul(gs[0], b.mul(n.outputs[0], n.outputs[0]))),))


# -- binary -----------------------------------------------------------------------------------
def _binary(name, out_dtype=None, nondiff=False, logical=False):
    def infer(ts):
        a, c = ts
        dev = _same_device(name, ts)
        if a.dtype != c.dtype:
            fail(name, ts, f"operands have dtypes {a.dtype.name} and {c.dtype.name}; the IR takes one dtype")
        if logical and a.dtype != bool_:
            fail(name, ts, "needs bool operands")
        return TensorType(broadcast_shapes(name, ts, a.shape, c.shape), out_dtype or a.dtype, dev)
    return defop(name, "binary", infer, 2, nondiff=nondiff)


for _name in ("add", "sub", "mul", "div", "pow", "maximum", "minimum", "mod"):
    _binary(_name)
for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    _binary(_name, out_dtype=bool_, nondiff=True)
for _name in ("logical_and", "logical_or"):
    _binary(_name, nondiff=True, logical=True)


@vjp("add")
def _add_vjp(b, n, gs):
    return gs[0], gs[0]


@vjp("sub")
def _sub_vjp(b, n, gs):
    return gs[0], (lambda: b.neg(gs[0]))


@vjp("mul")
def _mul_vjp(b, n, gs):
    x, y = n.inputs
    return (lambda: b.mul(gs[0], y)), (lambda: b.mul(gs[0], x))


@vjp("div")
def _div_vjp(b, n, gs):
    x, y = n.inputs
    return (lambda: b.div(gs[0], y)), (lambda: b.neg(b.div(b.mul(gs[0], n.outputs[0]), y)))


@vjp("pow")
def _pow_vjp(b, n, gs):
    x, y = n.inputs
    return ((lambda: b.mul(gs[0], b.mul(y, b.pow(x, b.sub(y, 1.0))))),
            (lambda: b.mul(gs[0], b.mul(n.outputs[0], b.log(x)))))


@vjp("mod")
def _mod_vjp(b, n, gs):
    # x mod y = x - floor(x / y) y  (Python's and PyTorch's sign convention)
    x, y = n.inputs
    return gs[0], (lambda: b.neg(b.mul(gs[0], b.floor(b.div(x, y)))))


def _minmax_vjp(cmp):
    # ties share the gradient equally, like torch.maximum
    def rule(b, n, gs):
        x, y = n.inputs
        g = gs[0]
        half = b.mul(g, 0.5)
        into_x = lambda: b.where(getattr(b, cmp)(x, y), g, b.where(b.eq(x, y), half, 0.0))
        into_y = lambda: b.where(getattr(b, cmp)(y, x), g, b.where(b.eq(x, y), half, 0.0))
        return into_x, into_y
    return rule


vjp("maximum")(_minmax_vjp("gt"))
vjp("minimum")(_minmax_vjp("lt"))


# -- where, cast ------------------------------------------------------------------------------
def _where_infer(ts):
    c, x, y = ts
    dev = _same_device("where", ts)
    if c.dtype != bool_:
        fail("where", ts, f"condition must be bool, got {c.dtype.name}")
    if x.dtype != y.dtype:
        fail("where", ts, f"branches have dtypes {x.dtype.name} and {y.dtype.name}")
    return TensorType(broadcast_shapes("where", ts, c.shape, x.shape, y.shape), x.dtype, dev)


defop("where", "ternary", _where_infer, 3)


@vjp("where")
def _where_vjp(b, n, gs):
    c = n.inputs[0]
    return None, (lambda: b.where(c, gs[0], 0.0)), (lambda: b.where(c, 0.0, gs[0]))


defop("cast", "cast", lambda ts, dtype: ts[0].with_(dtype=dtype), 1, dict(dtype=None))


@vjp("cast")
def _cast_vjp(b, n, gs):
    x = n.inputs[0]
    return (b.cast_to(gs[0], b.dtype(x)) if b.dtype(x).is_floating else None),
