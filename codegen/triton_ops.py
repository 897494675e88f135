"""Triton expressions for the elementwise primitives: one table keyed by op name, like the numpy
backend's `LOWER`, with the same semantics (numpy's is the reference).

A lowering takes argument expressions (already converted to the compute dtype) and returns one
expression. Half-precision math is done in fp32 and rounded once per op, as the numpy backend
does; `compute_dtype` says which dtype the arguments arrive in.
"""
from __future__ import annotations

import math

from ..ir.types import DType, bfloat16, bool_, float16, float32
from .kernel_values import cast_lowering, pow_lowering

HALF = (float16, bfloat16)

TL = {"float32": "tl.float32", "float16": "tl.float16", "bfloat16": "tl.bfloat16", "float64": "tl.float64",
      "int64": "tl.int64", "int32": "tl.int32", "int16": "tl.int16", "int8": "tl.int8", "uint8": "tl.uint8",
      "uint32": "tl.uint32", "bool": "tl.int1"}


def tl_dtype(d: DType) -> str:
    return TL[d.name]


def literal(value, d: DType) -> str:
    """A scalar constant of dtype `d` (Python float literals are fp32 in Triton)."""
    if d == bool_:
        return "tl.full([], 1, tl.int1)" if value else "tl.full([], 0, tl.int1)"
    if d.is_floating:
        v = float(value)
        text = repr(v) if math.isfinite(v) else f'float("{v}")'
        return text if d == float32 else f"tl.full([], {text}, {tl_dtype(d)})"
    return f"tl.full([], {int(value)}, {tl_dtype(d)})"


def compute_dtype(op: str, ins: list[DType]) -> DType | None:
    """The dtype an op computes in: fp32 for half inputs (even neg and comparisons: Triton's
    interpreter applies those to the raw 16 bits), else the input dtype."""
    if op in ("where", "cast") or not ins:
        return None
    return float32 if ins[0] in HALF else None


def _un(fn):
    return lambda a, ins, out: f"{fn}({a[0]})"


def _bin(sym):
    return lambda a, ins, out: f"{a[0]} {sym} {a[1]}"


def _div(a, ins, out):
    return f"floordiv({a[0]}, {a[1]})" if ins[0].is_integer else f"{a[0]} / {a[1]}"


def _minmax(fn):
    def lower(a, ins, out):
        nan = ", propagate_nan=tl.PropagateNan.ALL" if ins[0].is_floating else ""
        return f"tl.{fn}({a[0]}, {a[1]}{nan})"
    return lower


def _sign(a, ins, out):
    if ins[0].is_floating:
        return f"tl.where({a[0]} > 0, 1.0, tl.where({a[0]} < 0, -1.0, {a[0]} * 0.0))"
    return f"tl.where({a[0]} > 0, 1, tl.where({a[0]} < 0, -1, 0)).to({tl_dtype(ins[0])})"


_pow = pow_lowering("tl.sqrt", "pow_({0}, {1})")
_cast = cast_lowering(lambda x, t: f"{x}.to({tl_dtype(t)})")


COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")

LOWER = {
    "neg": lambda a, ins, out: f"-{a[0]}",
    "abs": _un("tl.abs"), "exp": _un("tl.exp"), "log": _un("tl.log"), "sqrt": _un("tl.sqrt"),
    "rsqrt": lambda a, ins, out: f"1.0 / tl.sqrt({a[0]})", "tanh": _un("tanh"), "sin": _un("tl.sin"),
    "cos": _un("tl.cos"), "erf": _un("tl.erf"), "sigmoid": _un("tl.sigmoid"), "floor": _un("tl.floor"),
    "reciprocal": lambda a, ins, out: f"1.0 / {a[0]}", "sign": _sign,
    "logical_not": lambda a, ins, out: f"({a[0]} == 0)", "isnan": lambda a, ins, out: f"({a[0]} != {a[0]})",
    "add": _bin("+"), "sub": _bin("-"), "mul": _bin("*"), "div": _div, "pow": _pow,
    "maximum": _minmax("maximum"), "minimum": _minmax("minimum"),
    "mod": lambda a, ins, out: f"floormod({a[0]}, {a[1]})",
    "eq": _bin("=="), "ne": _bin("!="), "lt": _bin("<"), "le": _bin("<="), "gt": _bin(">"), "ge": _bin(">="),
    "logical_and": _bin("&"), "logical_or": _bin("|"),
    "where": lambda a, ins, out: f"tl.where({a[0]}, {a[1]}, {a[2]})",
    "cast": _cast,
}
