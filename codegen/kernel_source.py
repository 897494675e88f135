"""What a written Triton kernel is, for the host code that launches it: `KernelSource` (its source,
pointer arguments, plan, index-check sites, and which outputs may be stored over which inputs),
and `Buf`, the indenting line buffer the kernel writer builds source in."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import triton

from ..ir.graph import Value
from ..ir.passes.fusion_plan import KernelPlan


class Buf:
    """Lines of code at an indentation level."""

    def __init__(self, level: int = 1):
        self.lines: list[str] = []
        self.level = level
        self.prov = None

    def line(self, text: str = "") -> None:
        self.lines.append("    " * self.level + text if text else "")

    @contextlib.contextmanager
    def indent(self):
        self.level += 1
        try:
            yield
        finally:
            self.level -= 1

    def splice(self, other: "Buf") -> None:
        self.lines.extend(other.lines)


@dataclass
class KernelSource:
    name: str
    source: str                          # the @triton.jit function
    args: list[Value]                    # pointer arguments, in order
    plan: KernelPlan | None
    persistent: bool
    parts: list = field(default_factory=list)    # foreach: (numel,) per part
    sites: list = field(default_factory=list)    # index checks: `chk_ptr` row k is sites[k]
    # NOTE: pointwise kernels only: per argument, (part, element offsets it is loaded or stored
    # at); an output may overwrite an input whose every load is at its own store's offset
    access: dict = field(default_factory=dict)

    def can_overwrite(self, x: Value, out: Value) -> bool:
        """Whether `out` may be stored into `x`'s buffer: each program loads x only at the
        elements it stores out at, before storing (pointwise kernels load everything first)."""
        a, b = self.access.get(x), self.access.get(out)
        return a is not None and a == b and len(a[1]) == 1 and x.type == out.type

    @property
    def key(self) -> str:
        """Structure only: no comments (whole-line or trailing), no name: the kernels of identical
        layers share one compile. NOTE: generated kernels hold no string literals, so `#` starts a comment."""
        body = [ln.split("#", 1)[0].rstrip() for ln in self.source.splitlines()]
        return "\n".join(ln for ln in body if ln).replace(self.name, "KERNEL")


def next_pow2(n: int) -> int:
    return triton.next_power_of_2(max(1, n))
