"""The IR's data structures: `Value`, `Node`, `Provenance` and `Graph` (SSA, immutable).

A `Graph` is an ordered tuple of `Node`s; each node reads `Value`s defined earlier (or graph inputs)
and defines new ones. Passes never edit a node: they build a new `Graph`, keeping the `Value`
objects (and so the names) of everything they leave alone, which is why two stages diff cleanly.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from .types import TensorType


@dataclass(frozen=True, eq=False)
class Value:
    """A typed SSA value. Equality is identity: names are for people, not for lookup."""
    name: str
    type: TensorType

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self):
        return self.type.dtype

    def __repr__(self) -> str:
        return f"{self.name}: {self.type}"


@dataclass(frozen=True)
class Provenance:
    """Where a node came from in the user's program."""
    file: str = ""
    line: int = 0
    code: str = ""          # the source line, stripped
    function: str = ""      # the user's function (`GPT.forward`)
    module: str = ""        # module path (`blocks.3.attn`)

    def where(self) -> str:
        import os
        return f"{os.path.basename(self.file)}:{self.line}" if self.file else "<unknown>"

    def __str__(self) -> str:
        parts = [self.where()]
        if self.module:
            parts.append(self.module)
        if self.function:
            parts.append(self.function)
        if self.code:
            parts.append(self.code)
        return "  ".join(parts)


def _freeze(attrs: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(attrs or {}))


@dataclass(frozen=True, eq=False)
class Node:
    op: str
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    attrs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    prov: Provenance | None = None
    tag: str = ""           # who emitted it: "" (user), "vjp(matmul).x", "decompose(softmax)"
    phase: str = "forward"  # "forward" | "backward" | "update" (after backward)

    def __post_init__(self):
        if not isinstance(self.attrs, MappingProxyType):
            object.__setattr__(self, "attrs", _freeze(self.attrs))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))

    @property
    def out(self) -> Value:
        assert len(self.outputs) == 1, f"{self.op} has {len(self.outputs)} outputs"
        return self.outputs[0]

    def with_(self, **changes) -> "Node":
        return replace(self, **changes)


@dataclass(frozen=True, eq=False)
class Graph:
    name: str
    inputs: tuple[Value, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[Value, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)  # stage, ms, roles of inputs/outputs, ...

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "outputs", tuple(self.outputs))

    def with_(self, **changes) -> "Graph":
        if "meta" in changes:
            changes["meta"] = {**self.meta, **changes["meta"]}
        return replace(self, **changes)

    # -- queries ---------------------------------------------------------------------------
    def producers(self) -> dict[Value, Node]:
        return {v: n for n in self.nodes for v in n.outputs}

    def users(self) -> dict[Value, list[Node]]:
        out: dict[Value, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(v, []).append(n)
        return out

    def values(self) -> Iterable[Value]:
        yield from self.inputs
        for n in self.nodes:
            yield from n.outputs

    def name_counter(self) -> itertools.count:
        """A counter for fresh `t<N>` names that cannot collide with names already here."""
        top = -1
        for v in self.values():
            m = re.fullmatch(r"t(\d+)", v.name)
            if m:
                top = max(top, int(m.group(1)))
        return itertools.count(top + 1)

    # -- export ----------------------------------------------------------------------------
    def to_networkx(self):
        """A DiGraph whose nodes are IR nodes (by index) and graph inputs/outputs; edges carry values."""
        import networkx as nx
        g = nx.DiGraph(name=self.name)
        prod: dict[Value, Any] = {}
        for v in self.inputs:
            g.add_node(v.name, kind="input", type=str(v.type))
            prod[v] = v.name
        for i, n in enumerate(self.nodes):
            g.add_node(i, kind="op", op=n.op, outputs=[o.name for o in n.outputs])
            for v in n.inputs:
                g.add_edge(prod[v], i, value=v.name, type=str(v.type))
            for o in n.outputs:
                prod[o] = i
        for k, v in enumerate(self.outputs):
            g.add_node(f"out{k}", kind="output")
            g.add_edge(prod[v], f"out{k}", value=v.name, type=str(v.type))
        return g

    def to_dot(self) -> str:
        """Graphviz source: one box per node, one ellipse per input and output."""
        lines = [f'digraph "{self.name}" {{', "  rankdir=TB; node [fontname=monospace fontsize=10];"]
        prod: dict[Value, str] = {}
        for v in self.inputs:
            lines.append(f'  "{v.name}" [shape=ellipse label="{v.name}\\n{v.type}"];')
            prod[v] = v.name
        for i, n in enumerate(self.nodes):
            outs = ", ".join(o.name for o in n.outputs)
            typ = ", ".join(str(o.type) for o in n.outputs)
            lines.append(f'  n{i} [shape=box label="{outs} = {n.op}\\n{typ}"];')
            for v in n.inputs:
                lines.append(f'  "{prod[v]}" -> n{i};')
            for o in n.outputs:
                prod[o] = f"n{i}"
        for k, v in enumerate(self.outputs):
            lines.append(f'  out{k} [shape=ellipse style=dashed label="return {v.name}"];')
            lines.append(f'  "{prod[v]}" -> out{k};')
        lines.append("}")
        return "\n".join(lines)

    def __str__(self) -> str:
        from .printer import format_graph
        return format_graph(self)
