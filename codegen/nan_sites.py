"""TRACEGRAD_CHECK_NANS inside a fused Triton kernel: each float value a kernel computes is
scanned where it is made, so the error names the node that made the first NaN, not only the
kernel that holds it:

    tmp5 = tl.log(tmp4)
    if tl.max(tl.where(xmask, (tmp5 != tmp5).to(tl.int32), 0), axis=None) > 0:  # NaN check
        tl.atomic_min(nan_ptr, 3)

Each scanned value gets a number in program order (kernels in launch order, nodes in each kernel's
order); the flag keeps the smallest, read once per step (runtime/nan_flags.py). Only with
TRACEGRAD_CHECK_NANS=1: the numbers are literals in the kernels' source.
"""
from __future__ import annotations

from ..ir.graph import Node, Value


class NanSites:
    """The program's scanned values, numbered in program order: `wheres[k]` describes number k."""

    def __init__(self):
        self.wheres: list[str] = []

    def add(self, name: str, what: str, n: Node) -> int:
        self.wheres.append(f"{name} = {what} at {n.prov or '?'}")
        return len(self.wheres) - 1


def scan_value(w, n: Node, v: Value, code: str, mask: str, rdep: bool) -> None:
    """Emit the NaN scan of value `v` (expression `code`, node `n`) into writer `w`'s buffer."""
    if code in w.nan_seen:
        return
    w.nan_seen.add(code)
    k = w.nans.add(v.name, f"{n.op} in {w.kernel_name}", n)
    # NOTE: half values are compared in fp32: the interpreter compares a half's raw bits. One
    # atomic per block on a branch, not one per lane (see index_sites.guard_index for the cost)
    x = f"{code}.to(tl.float32)" if v.dtype.itemsize == 2 else code
    b = w.buf(rdep)
    if mask:
        # NOTE: tl.where, not &: the interpreter cannot `&` a scalar comparison with a block
        b.line(f"if tl.max(tl.where({mask}, ({x} != {x}).to(tl.int32), 0), axis=None) > 0:  # NaN check")
    else:            # a value for the whole program (a scalar)
        b.line(f"if {x} != {x}:  # NaN check")
    with b.indent():
        b.line(f"tl.atomic_min(nan_ptr, {k})")
