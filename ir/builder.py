"""Builders: the one interface through which VJP rules and decompositions emit ops.

A rule calls `b.mul(g, y)` or `b.sum(x, axes=(1,), keepdim=True)`; what that does depends on the
builder. `GraphBuilder` appends IR nodes to a graph (handles are `Value`s); the frontend's builder
runs the op eagerly or records it into a trace (handles are Tensors). So one set of rules serves
eager autograd, traced autodiff and graph passes.
"""
from __future__ import annotations

import contextlib
import itertools
from typing import Any, Sequence

from .graph import Graph, Node, Provenance, Value
from .ops.registry import OPS, get
from .types import DType, TensorType, bool_

Scalar = (int, float, bool)


class Builder:
    """Base class. Subclasses define `emit` and `type_of`; everything else derives from those."""

    def emit(self, op: str, inputs: Sequence[Any], attrs: dict) -> tuple:
        raise NotImplementedError

    def type_of(self, h) -> TensorType:
        raise NotImplementedError

    @contextlib.contextmanager
    def scope(self, node=None, tag: str = ""):
        """Emitted ops belong to `node` (provenance) and carry `tag` (e.g. "vjp(matmul)")."""
        yield

    # -- sugar: b.<op>(*inputs, **attrs) ------------------------------------------------------
    def __getattr__(self, name: str):
        if name.startswith("_") or name not in OPS:
            raise AttributeError(name)

        def call(*inputs, **attrs):
            outs = self.emit(name, self.lift_scalars(inputs), attrs)
            return outs[0] if len(outs) == 1 else outs
        call.__name__ = name
        return call

    def lift_scalars(self, inputs) -> list:
        """Python numbers become 0-d constants of the dtype/device of the first non-bool tensor."""
        if not any(isinstance(x, Scalar) for x in inputs):
            return list(inputs)
        like = [self.type_of(x) for x in inputs if not isinstance(x, Scalar)]
        ref = next((t for t in like if t.dtype != bool_), like[0] if like else None)
        if ref is None:
            raise TypeError("an op needs at least one tensor input")
        return [self.full((), x, ref.dtype, ref.device) if isinstance(x, Scalar) else x for x in inputs]

    # -- helpers used by rules ---------------------------------------------------------------
    def shape(self, h) -> tuple[int, ...]:
        return self.type_of(h).shape

    def dtype(self, h) -> DType:
        return self.type_of(h).dtype

    def full(self, shape, value, dtype: DType, device: str = "cpu"):
        return self.emit("full", [], dict(shape=tuple(shape), value=value, dtype=dtype, device=device))[0]

    def full_like(self, h, value, dtype: DType | None = None):
        t = self.type_of(h)
        return self.full(t.shape, value, dtype or t.dtype, t.device)

    def zeros_like(self, h):
        return self.full_like(h, 0)

    def cast_to(self, h, dtype: DType):
        return h if self.dtype(h) == dtype else self.emit("cast", [h], dict(dtype=dtype))[0]

    def reshape_to(self, h, shape):
        shape = tuple(shape)
        return h if self.shape(h) == shape else self.emit("reshape", [h], dict(shape=shape))[0]

    def expand_to(self, h, shape):
        shape = tuple(shape)
        return h if self.shape(h) == shape else self.emit("expand", [h], dict(shape=shape))[0]

    def sum_to(self, h, shape):
        """Undo broadcasting: sum `h` down to `shape` (the driver's one place for it)."""
        shape = tuple(shape)
        have = self.shape(h)
        if have == shape:
            return h
        lead = len(have) - len(shape)
        axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1 and have[lead + i] != 1)
        if axes:
            h = self.emit("sum", [h], dict(axes=axes, keepdim=True))[0]
        return self.reshape_to(h, shape)


class GraphBuilder(Builder):
    """Builds a new `Graph`; handles are `Value`s. Fresh names continue a counter so they never clash."""

    def __init__(self, name: str = "graph", counter=None, phase: str = "forward"):
        self.name = name
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []
        self._names = counter if counter is not None else itertools.count()
        self._prov: Provenance | None = None
        self._tag = ""
        self.phase = phase

    @classmethod
    def continuing(cls, graph: Graph, phase: str = "forward") -> "GraphBuilder":
        b = cls(graph.name, graph.name_counter(), phase)
        b.inputs = list(graph.inputs)
        return b

    def fresh(self, type: TensorType) -> Value:
        return Value(f"t{next(self._names)}", type)

    def input(self, name: str, type: TensorType) -> Value:
        v = Value(name, type)
        self.inputs.append(v)
        return v

    def type_of(self, h) -> TensorType:
        return h.type

    def emit(self, op, inputs, attrs):
        opdef = get(op)
        attrs = opdef.normalize_attrs(attrs)
        types = opdef.infer_types([v.type for v in inputs], attrs)
        outs = tuple(self.fresh(t) for t in types)
        self.nodes.append(Node(op, tuple(inputs), outs, attrs, self._prov, self._tag, self.phase))
        return outs

    def add_node(self, node: Node) -> None:
        self.nodes.append(node)

    @contextlib.contextmanager
    def scope(self, node=None, tag: str = ""):
        saved = self._prov, self._tag
        if node is not None:
            self._prov = getattr(node, "prov", None) or self._prov
        self._tag = tag or self._tag
        try:
            yield
        finally:
            self._prov, self._tag = saved

    def finish(self, outputs, meta: dict | None = None) -> Graph:
        return Graph(self.name, tuple(self.inputs), tuple(self.nodes), tuple(outputs), dict(meta or {}))
