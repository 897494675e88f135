"""What an index check says about a graph node, and the lines a Triton kernel checks an index
with.

A site is named by the op the user called (`embedding`, not the `take` it decomposed into) and
the user's line, for the numpy and Triton writers alike. In a Triton kernel, each loaded index
gets (`guard_index`):

    tmp3 = (tmp1 < 0) | (tmp1 >= 50304)
    tmp4 = (tmp3 & xmask) != 0
    if tl.max(tmp4.to(tl.int32), axis=None) > 0:  # embedding: index out of range
        tl.store(chk_ptr + 0, 1)
        tl.store(chk_ptr + 1, tl.max(tl.where(tmp4, tmp1.to(tl.int64), -2**62), axis=None))
    tmp5 = tl.where(tmp3, 0, tmp1)

and addresses use `tmp5`: a bad index is recorded in the kernel's rows of the program's flag
buffer and read as 0, never out of bounds (runtime/index_flags.py reads the flags).
"""
from __future__ import annotations

import re

from ..ir.graph import Graph, Node
from ..runtime.index_range import Site

_COMPOSITE = re.compile(r"decompose\((\w+)\)")


def index_op(n: Node) -> str:
    """The user's op: the composite a node was decomposed from, else the node's own op."""
    m = _COMPOSITE.search(n.tag or "")
    return m.group(1) if m else n.op


def site_where(n: Node, graph: Graph | str) -> str:
    """`file:line: code` of the user's line that made `n` (the graph's name when unknown)."""
    p = n.prov
    if p is not None and p.file:
        return f"{p.file}:{p.line}: {p.code}"
    return graph if isinstance(graph, str) else graph.name


def site(n: Node, graph: Graph | str, size: int, allowed: int | None = None) -> Site:
    return Site(index_op(n), size, site_where(n, graph), allowed)


class Sites:
    """The checked index sites of one kernel, numbered from 0 (its rows of the flag buffer)."""

    def __init__(self, where: str):
        self.where, self.sites, self.slot = where, [], {}

    def add(self, n: Node, size: int) -> int:
        key = (id(n), size)
        if key not in self.slot:
            self.slot[key] = len(self.sites)
            self.sites.append(site(n, self.where, size))
        return self.slot[key]


def guard_index(w, n: Node, code: str, size: int, mask: str, rdep: bool) -> str:
    """Emit the check of index expression `code` against [0, size) into writer `w`'s buffer;
    returns the name of the index to address with (0 where the index is bad)."""
    k = w.sites.add(n, size)
    op = w.sites.sites[k].op
    bad = w.assign(f"({code} < 0) | ({code} >= {size})", rdep)
    b = w.buf(rdep)
    if not mask:     # one index for the whole program: a scalar, or a [XBLOCK, 1] reduction result
        at = f"0 * {bad}.to(tl.int32)"     # NOTE: a pointer of the index's shape, for either
        b.line(f"tl.store(chk_ptr + {2 * k} + {at}, 1, {bad})  # {op}: index out of range")
        b.line(f"tl.store(chk_ptr + {2 * k + 1} + {at}, {code}.to(tl.int64), {bad})")
        return w.assign(f"tl.where({bad}, 0, {code})", rdep)
    # NOTE: one branch on a block-wide max, not a store per lane: per-lane stores of the flag cost
    # +49% on a bf16 embedding gather on an H200 (53 -> 79 us), the branch +2.5% (53 -> 54 us).
    # `!= 0`: the interpreter widens a scalar & block to int64
    m = w.assign(f"({bad} & {mask}) != 0", rdep)
    b.line(f"if tl.max({m}.to(tl.int32), axis=None) > 0:  # {op}: index out of range")
    with b.indent():
        b.line(f"tl.store(chk_ptr + {2 * k}, 1)")
        b.line(f"tl.store(chk_ptr + {2 * k + 1}, tl.max(tl.where({m}, {code}.to(tl.int64), -2**62), axis=None))")
    return w.assign(f"tl.where({bad}, 0, {code})", rdep)
