"""Each elementwise op as one scalar numba expression (`LOWER`), with the literals, type names and
the fp32 tanh the loop writer (`cpu_codegen`) puts around them."""
from __future__ import annotations

import math

from ..ir.types import DType, bool_
from .kernel_values import cast_lowering, pow_lowering

# NOTE: libm's tanhf is a call per element that keeps the loop scalar; this rational fit (Eigen's and
# XLA's fp32 tanh, within 2 ulp) is plain arithmetic: the demo's GELU kernel 3.7x faster than with tanhf
TANH32 = """@numba.njit(inline="always")
def tanh32(x):
    x = min(max(x, np.float32(-7.9053111)), np.float32(7.9053111))
    x2 = x * x
    p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
    p = x2 * p + np.float32(-8.60467152213735e-11)
    p = x2 * p + np.float32(5.12229709037114e-08)
    p = x2 * p + np.float32(1.48572235717979e-05)
    p = x2 * p + np.float32(6.37261928875436e-04)
    p = x2 * p + np.float32(4.89352455891786e-03)
    q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
    q = x2 * q + np.float32(2.26843463243900e-03)
    q = x2 * q + np.float32(4.89352518554385e-03)
    return x * p / q
"""


def nb_type(d: DType) -> str:
    return "np.bool_" if d == bool_ else f"np.{d.name}"


def literal(value, d: DType) -> str:
    if d == bool_:
        return "True" if value else "False"
    if d.is_floating:
        v = float(value)
        text = repr(v) if math.isfinite(v) else ("np.nan" if math.isnan(v) else ("np.inf" if v > 0 else "-np.inf"))
        return f"np.{d.name}({text})"
    return f"np.{d.name}({int(value)})"


def _sign(a, ins, out):
    one, zero = literal(1, out), literal(0, out)
    return f"({one} if {a[0]} > 0 else (-{one} if {a[0]} < 0 else {a[0]} * {zero}))"


def _div(a, ins, out):
    return f"{a[0]} // {a[1]}" if ins[0].is_integer else f"{a[0]} / {a[1]}"


def _minmax(cmp):
    """np.maximum / np.minimum: the first operand on a tie, NaN if either is. NOTE: as numba's
    max/min (a select the CPU makes without a branch) under a test that is almost never false;
    a select on the comparison itself compiles to a branch per element, mispredicted half the time
    on data (a 2x2 max-pool took 3x as long)."""
    fn = "max" if cmp == ">" else "min"
    return lambda a, ins, out: f"({fn}({a[0]}, {a[1]}) if ({a[0]} == {a[0]}) & ({a[1]} == {a[1]}) else {a[0]} + {a[1]})"


_pow = pow_lowering("np.sqrt", "{0} ** {1}")
_cast = cast_lowering(lambda x, t: f"{nb_type(t)}({x})")


LOWER = {
    "neg": lambda a, i, o: f"-{a[0]}", "abs": lambda a, i, o: f"abs({a[0]})",
    **{op: (lambda fn: lambda a, i, o: f"{fn}({a[0]})")(f"np.{op}") for op in ("exp", "log", "sqrt",
                                                                            "sin", "cos", "floor")},
    "tanh": lambda a, i, o: f"tanh32({a[0]})" if o.name == "float32" else f"np.tanh({a[0]})",
    "erf": lambda a, i, o: f"math.erf({a[0]})",
    "sigmoid": lambda a, i, o: f"{literal(1, o)} / ({literal(1, o)} + np.exp(-{a[0]}))",
    "rsqrt": lambda a, i, o: f"{literal(1, o)} / np.sqrt({a[0]})",
    "reciprocal": lambda a, i, o: f"{literal(1, o)} / {a[0]}", "sign": _sign,
    "logical_not": lambda a, i, o: f"(not {a[0]})", "isnan": lambda a, i, o: f"({a[0]} != {a[0]})",
    "add": lambda a, i, o: f"{a[0]} + {a[1]}", "sub": lambda a, i, o: f"{a[0]} - {a[1]}",
    "mul": lambda a, i, o: f"{a[0]} * {a[1]}", "div": _div, "pow": _pow,
    "maximum": _minmax(">"), "minimum": _minmax("<"),
    "mod": lambda a, i, o: f"{a[0]} % {a[1]}",
    "eq": lambda a, i, o: f"({a[0]} == {a[1]})", "ne": lambda a, i, o: f"({a[0]} != {a[1]})",
    "lt": lambda a, i, o: f"({a[0]} < {a[1]})", "le": lambda a, i, o: f"({a[0]} <= {a[1]})",
    "gt": lambda a, i, o: f"({a[0]} > {a[1]})", "ge": lambda a, i, o: f"({a[0]} >= {a[1]})",
    # NOTE: `&` and `|`, not `and` and `or`: Python's short-circuit is a branch that keeps a loop scalar
    "logical_and": lambda a, i, o: f"({a[0]} & {a[1]})", "logical_or": lambda a, i, o: f"({a[0]} | {a[1]})",
    "where": lambda a, i, o: f"({a[1]} if {a[0]} else {a[2]})",
    "cast": _cast,
}
