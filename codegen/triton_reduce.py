"""How a Triton kernel writer reduces a row: persistent (the whole row in one block) or looped over
row blocks with accumulators, for sum, max (NaN-propagating, as numpy's) and argmax (the first
maximum, or the first NaN). `ReductionWriter` is the part of `triton_kernel.KernelWriter` that
writes these lines; it uses the writer's buffers (`outer`, `loop`), `emit`, `assign`, `loaded`
and `early` (row outputs the first loop stores).
"""
from __future__ import annotations

from ..ir.graph import Node
from ..ir.passes.fusion_plan import node_reads
from ..ir.types import DType, bool_, float32, float64
from .kernel_source import Buf
from .kernel_values import H
from .triton_ops import tl_dtype


def _acc_dtype(d: DType) -> DType:
    return float64 if d == float64 else float32 if d.is_floating else d


def _min_literal(d: DType) -> str:
    if d.is_floating:
        return 'float("-inf")'
    if d == bool_:
        return "0"
    return str(-(1 << (8 * d.itemsize - 1)) if d.kind == "int" else 0)


class ReductionWriter:
    def reduce(self, n: Node, idx, cnd) -> H:
        (x, sub, c), = node_reads(n, idx, cnd, self.plan, self.loaded)
        out = n.out.dtype
        acc_t = _acc_dtype(x.dtype)
        if self.persistent:
            h = self.emit(x, sub, c)
            return H(self.finish(n, [self.masked(n, h, acc_t, "xmask & rmask")], acc_t, out), out)
        saved = self.loop, self.loop_memo
        head = Buf(self.outer.level)
        accs = self.acc_init(n, head, acc_t)
        self.loop, self.loop_memo = Buf(self.outer.level + 1), {}
        h = self.emit(x, sub, c)
        self.acc_update(n, h, accs, acc_t)
        for v, idx in self.early:    # NOTE: the loop loads what they need already (loop_memo)
            self.store(v, idx, self.emit(v, idx))
        self.early = []
        loop = self.loop
        self.loop, self.loop_memo = saved
        self.outer.splice(head)
        self.open_loop(self.outer)
        self.outer.splice(loop)
        return H(self.finish(n, accs, acc_t, out, looped=True), out)

    def masked(self, n: Node, h: H, acc_t: DType, mask: str) -> str:
        # NOTE: half values are widened for max too (exact): the interpreter compares raw bf16 bits
        code = h.code if h.dtype == acc_t or h.const is not None else f"{h.code}.to({tl_dtype(acc_t)})"
        fill = "0" if n.op == "sum" else _min_literal(acc_t)
        return self.assign(f"tl.where({mask}, {code}, {fill})", True, n)

    def finish(self, n: Node, accs: list[str], acc_t: DType, out: DType, looped: bool = False) -> str:
        a = accs[0]
        if n.op == "sum":
            expr = f"tl.sum({a}, 1)[:, None]"
        elif n.op == "max":
            expr = f"nan_max({a}, 1)[:, None]" if acc_t.is_floating else f"tl.max({a}, 1)[:, None]"
        else:   # argmax: the first index holding the row's maximum, or its first NaN (numpy's argmax)
            fl = acc_t.is_floating
            m = self.assign(f"{'nan_max' if fl else 'tl.max'}({a}, 1)[:, None]", False, n)
            where = accs[1] if looped else "rindex"
            keep = (f"(({a} == {m}) | (({a} != {a}) & ({m} != {m})))" if fl else f"({a} == {m})") + \
                ("" if looped else " & rmask")
            expr = f"tl.min(tl.where({keep}, {where}, 2147483647), 1)[:, None].to(tl.int64)"
        if n.op != "argmax" and out != acc_t:
            expr = f"({expr}).to({tl_dtype(out)})"
        return self.assign(expr, False, n)

    def acc_init(self, n: Node, head: Buf, acc_t: DType) -> list[str]:
        name = f"acc{next(self.tmp)}"
        fill = "0" if n.op == "sum" else _min_literal(acc_t)
        head.line(f"{name} = tl.full([XBLOCK, RBLOCK], {fill}, {tl_dtype(acc_t)})")
        if n.op != "argmax":
            return [name]
        head.line(f"{name}_i = tl.full([XBLOCK, RBLOCK], 2147483647, tl.int32)")
        return [name, f"{name}_i"]

    def acc_update(self, n: Node, h: H, accs: list[str], acc_t: DType) -> None:
        v = self.masked(n, h, acc_t, "xmask & rmask")
        a = accs[0]
        if n.op == "sum":
            self.loop.line(f"{a} = {a} + {v}")
        elif n.op == "max":
            nan = ", propagate_nan=tl.PropagateNan.ALL" if acc_t.is_floating else ""
            self.loop.line(f"{a} = tl.maximum({a}, {v}{nan})")
        else:   # NOTE: a lane keeps its first NaN, as it keeps its first maximum
            self.loop.line(f"take = ({v} > {a}) | (({v} != {v}) & ({a} == {a}))" if acc_t.is_floating
                           else f"take = {v} > {a}")
            self.loop.line(f"{a} = tl.where(take, {v}, {a})")
            self.loop.line(f"{accs[1]} = tl.where(take, rindex + tl.zeros([XBLOCK, RBLOCK], tl.int32), {accs[1]})")

    def open_loop(self, b: Buf) -> None:
        b.line(f"for roffset in range(0, {self.plan.rnumel}, RBLOCK):")
        with b.indent():
            b.line("rindex = roffset + tl.arange(0, RBLOCK)[None, :]")
            b.line(f"rmask = rindex < {self.plan.rnumel}")
