"""The one op registry: every op's signature, shape/dtype rule, VJP rule and (for composites)
decomposition, keyed by name.

Each op is declared once with `defop`, and its VJP is registered right under it with `@vjp`.
Backends keep their own lowering tables keyed by the same names; a test checks they cover it all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import OpTypeError, UnknownOpError
from ..types import TensorType

# kinds of op; fusion and codegen dispatch on them
ELEMENTWISE = ("unary", "binary", "ternary", "cast")
KINDS = ELEMENTWISE + ("reduce", "movement", "index", "matmul", "creation", "random", "collective",
                       "composite", "marker")


@dataclass
class OpDef:
    name: str
    kind: str
    infer: Callable[..., list[TensorType]]   # (input types, **attrs) -> output types
    arity: int | None                         # None: variadic
    attrs: dict[str, Any] = field(default_factory=dict)   # attribute names -> defaults
    vjp: Callable | None = None               # (builder, node, cotangents) -> input cotangents
    nondiff: bool = False                     # explicitly not differentiable (indices, comparisons, rng)
    decompose: Callable | None = None         # composites: (builder, *inputs, **attrs) -> outputs
    side_effect: bool = False                 # kept by DCE even if unused (send)
    doc: str = ""

    @property
    def is_composite(self) -> bool:
        return self.kind == "composite"

    @property
    def is_elementwise(self) -> bool:
        return self.kind in ELEMENTWISE

    def normalize_attrs(self, attrs: dict) -> dict:
        defaults = self.attrs
        if tuple(attrs) == tuple(defaults):    # NOTE: all given, in order (graphs print and CSE by order)
            return attrs
        if not attrs:
            return dict(defaults)
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise TypeError(f"{self.name}: unknown attribute(s) {sorted(unknown)}; takes {sorted(self.attrs)}")
        return {k: attrs.get(k, d) for k, d in self.attrs.items()}

    def infer_types(self, types: list[TensorType], attrs: dict) -> list[TensorType]:
        if self.arity is not None and len(types) != self.arity:
            raise OpTypeError(self.name, types, f"takes {self.arity} inputs, got {len(types)}")
        out = self.infer(list(types), **attrs)
        return list(out) if isinstance(out, (list, tuple)) else [out]


OPS: dict[str, OpDef] = {}


def defop(name: str, kind: str, infer: Callable, arity: int | None, attrs: dict | None = None, *,
          nondiff: bool = False, side_effect: bool = False, doc: str = "") -> OpDef:
    assert kind in KINDS, kind
    assert name not in OPS, f"op {name} defined twice"
    op = OpDef(name, kind, infer, arity, dict(attrs or {}), nondiff=nondiff, side_effect=side_effect, doc=doc)
    OPS[name] = op
    return op


def get(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise UnknownOpError(name) from None


def vjp(name: str):
    """Register the VJP rule of `name`: `rule(b, node, gs) -> tuple of input cotangents (None = zero)`."""
    def deco(fn):
        get(name).vjp = fn
        return fn
    return deco


def decomposition(name: str):
    """Register how composite `name` is written in primitives: `fn(b, *inputs, **attrs) -> outputs`."""
    def deco(fn):
        get(name).decompose = fn
        return fn
    return deco


def fail(op: str, types, reason: str):
    raise OpTypeError(op, types, reason)
