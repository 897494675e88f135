"""Index bounds: an index out of range raises `IndexError` naming the op and the user's line, on
every backend, instead of wrapping (numpy's negative indices) or reading past a buffer (Triton).

Eager CPU ops are checked before they run. A compiled numpy step checks, on each call, the inputs
that reach an index operand through views and casts only (`checks_of(graph)`), the way a step gets
token ids and targets. NOTE: only host (numpy) buffers are checked here: a check of a GPU buffer
would cost a host sync per step. Triton steps (GPU, and the interpreter on the CPU) check inside
their kernels instead and report lazily (runtime/index_flags.py). The message is the one of
`runtime.index_range.out_of_range` everywhere.
"""
from __future__ import annotations

import numpy as np

from .ir.graph import Graph
from .provenance import where as user_line
from .runtime.index_range import check_host

# op -> (position of the index operand, the size it indexes, a value let through (None: none))
_INDEXED = {
    "take": lambda ts, a: (1, ts[0].shape[a["axis"]], None),
    "gather": lambda ts, a: (1, ts[0].shape[a["axis"]], None),
    "index_add": lambda ts, a: (1, ts[0].shape[a["axis"]], None),
    "scatter_add": lambda ts, a: (1, ts[0].shape[a["axis"]], None),
    "embedding": lambda ts, a: (1, ts[0].shape[0], None),
    "cross_entropy": lambda ts, a: (1, ts[0].shape[1], a["ignore_index"]),
}
_TRANSPARENT = ("reshape", "cast", "stop_gradient", "expand", "permute")


def check(op: str, idx, size: int, allowed, where: str, lo: int = 0) -> None:
    """Raise IndexError if a host array `idx` has a value outside [lo, size) other than `allowed`."""
    if isinstance(idx, np.ndarray):
        check_host(op, idx, size, where, allowed, lo)


def needs_index_check(op: str) -> bool:
    return op in _INDEXED


def check_eager(op: str, inputs, attrs) -> None:
    rule = _INDEXED.get(op)
    if rule is None:
        return
    pos, size, allowed = rule([t._type for t in inputs], attrs)
    data = inputs[pos]._data
    if isinstance(data, np.ndarray) and not (data.size and 0 <= data.min() and data.max() < size):
        check(op, data, size, allowed, user_line())


def checks_of(graph: Graph) -> list[tuple]:
    """(graph input position, op, size, allowed, the user's line) for each index operand that is a
    graph input seen through views and casts."""
    origin = {v: i for i, v in enumerate(graph.inputs)}
    plus: dict = {}         # value -> the input it adds a constant to
    wrapped: set = set()    # values that are `where(i < 0, i + n, i)` of an input (t[i], negative i)
    out = []
    for n in graph.nodes:
        if n.op in _TRANSPARENT and n.inputs[0] in origin:
            origin[n.outputs[0]] = origin[n.inputs[0]]
            if n.inputs[0] in wrapped:
                wrapped.add(n.outputs[0])
        elif n.op == "add" and n.inputs[0] in origin:
            plus[n.outputs[0]] = n.inputs[0]
        elif n.op == "where" and n.inputs[2] in origin and plus.get(n.inputs[1]) is n.inputs[2]:
            origin[n.outputs[0]] = origin[n.inputs[2]]
            wrapped.add(n.outputs[0])
        rule = _INDEXED.get(n.op)
        if rule is not None:
            pos, size, allowed = rule([v.type for v in n.inputs], n.attrs)
            if n.inputs[pos] in origin:
                where = (f"{n.prov.file}:{n.prov.line}: {n.prov.code}" if n.prov is not None and n.prov.file
                         else graph.name)
                lo = -size if n.inputs[pos] in wrapped else 0
                out.append((origin[n.inputs[pos]], n.op, size, allowed, where, lo))
    return out


def check_inputs(checks: list[tuple], arrays) -> None:
    for pos, op, size, allowed, where, lo in checks:
        check(op, arrays[pos], size, allowed, where, lo)
