"""Loop source for one fused kernel on the CPU: a numba function from a kernel node's body.

The same fusion groups and index arithmetic as the Triton writer (`ir.passes.fusion_plan`,
`fusion_index`), written as scalar loops that numba compiles: each value is computed at the
index its reader needs, movement ops only rewrite indices, so a group is one pass over memory.

    pointwise    for xindex in range(x0, x1): ... out_ptr0[xindex] = tmp3
    reduction    for xindex in range(x0, x1) (rows): one `for rindex` loop per reduction
                 (producers are recomputed inside it), then a last loop writing the row-shaped outputs
    foreach      one function per independent part (the optimizer update of each parameter);
                 parts of one layout have the same source and share one compile

Arguments are the range of x to cover, then flat contiguous arrays (`in_ptrN`, then `out_ptrN`);
the runtime splits x over threads (the functions release the GIL). Sums of floats accumulate in
float64 (the numpy reference sums pairwise; a running fp32 sum over a long row drifts further).
LLVM may reassociate sums and contract multiply-adds into FMAs (`fastmath` reassoc, contract,
not the flags that assume no NaN or infinity): sums over a row vectorize, and results move by
rounding only (a fused GELU backward with its bias gradient: 2.2 ms -> 1.5 ms on [1024, 512]).
Groups this writer does not take (half precision, random numbers) raise `Unsupported` and run
as numpy lines instead. Each op's scalar expression comes from `cpu_scalars`; `cpu_loops` then
reorders a written nest where its indices would keep it scalar.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass

from ..ir.graph import Graph, Node, Value
from ..ir.ops.registry import ELEMENTWISE, get
from ..ir.passes.fusion_index import Sym, depends_on, linearize
from ..ir.passes.fusion_plan import (RANDOM, REDUCTIONS, VIEWS, KernelPlan, after_reduction, index_tags,
                                     is_reduction, make_plan, node_reads, rng_state_out)
from ..ir.types import bool_, float16, bfloat16, float32, float64, int64
from .cpu_loops import interchange, row_tile
from .cpu_scalars import LOWER, TANH32, literal, nb_type
from .index_sites import index_op
from .kernel_values import H

ROW_BUFFER_MAX = 1 << 16     # row values kept for later loops in a buffer of at most this many elements
_REFS = re.compile(r"\b(?:tmp|acc)\d+(?:_i)?\b")


class Unsupported(Exception):
    """The group has something the loop writer does not lower; it runs as numpy ops."""


@dataclass
class CpuKernelSource:
    name: str
    source: str               # a module: `import numpy as np`, helpers, the numba function
    args: list[Value]        # its inputs, then its outputs
    xnumel: int               # the loop `for xindex in range(x0, x1)` covers [0, xnumel)
    rnumel: int               # work per xindex


def check_supported(body: Graph) -> None:
    """Raise Unsupported if the body has an op or dtype the loop writer does not lower."""
    for n in body.nodes:
        if n.op in RANDOM:
            raise Unsupported(f"{n.op}: random numbers run in numpy")
        k = get(n.op).kind
        if not (n.op in VIEWS or n.op in REDUCTIONS or n.op in ("full", "iota", "pad", "concat", "take", "gather")
                or (k in ELEMENTWISE and n.op in LOWER)):
            raise Unsupported(f"{n.op} has no loop lowering")
        for v in (*n.inputs, *n.outputs):
            if v.type.dtype in (float16, bfloat16):
                raise Unsupported("half precision runs in numpy")


class Lines:
    def __init__(self, level: int):
        self.lines: list[str] = []
        self.level = level

    def line(self, text: str) -> None:
        self.lines.append("    " * self.level + text)


class LoopWriter:
    """Walks a body from its outputs and writes the loop nest of one kernel (or one foreach part)."""

    def __init__(self, body: Graph, plan: KernelPlan, args: dict[Value, str], counter, level: int,
                 keep: set | None = None):
        self.body, self.plan, self.args, self.tmp = body, plan, args, counter
        self.prod = {o: n for n in body.nodes for o in n.outputs}
        self.red = plan.kind == "reduction"
        self.level = level
        self.pre = Lines(level)            # before the loop: values the same for every x (hoisted)
        self.outer = Lines(level + 1)      # inside `for xindex`
        self.loop: Lines | None = None     # inside the current `for rindex`
        self.memo: dict = {}
        self.loop_memo: dict = {}
        self.xdep = True
        self.pre_names: set[str] = set()
        self.loop_id = 0
        self.loops_of: dict = {}           # row value -> the reduction loops that compute it
        self.keep = keep or set()          # row values kept in a row buffer for later loops
        self.kept: dict = {}               # such a value -> (its buffer, dtype, the loop writing it)
        self.closed: set = set()           # loops already written out (earlier in the source)
        self.used: set = set()             # kept values a later loop read back
        self.inner: int | None = None      # D when the loop runs over rows of D (`row_tile`)
        self.early: list = []              # row outputs no reduction feeds: stored in the first loop
        self.checked: set = set()          # (index, size) pairs already checked in this nest
        self.node: Node | None = None      # the node whose reads are being emitted (for errors)

    def buf(self, rdep: bool, xdep: bool = True) -> Lines:
        if not xdep and not rdep:
            return self.pre
        if rdep:
            assert self.loop is not None, "a row-dependent value outside a reduction loop"
            return self.loop
        return self.outer

    def assign(self, expr: str, rdep: bool) -> str:
        name = f"tmp{next(self.tmp)}"
        xdep = self.xdep or any(r not in self.pre_names for r in _REFS.findall(expr))
        if not xdep and not rdep:
            self.pre_names.add(name)
        self.buf(rdep, xdep).line(f"{name} = {expr}")
        return name

    def emit(self, v: Value, idx: tuple, cnd: tuple = ()) -> H:
        tags = index_tags(idx, cnd)
        rdep = self.red and "r" in tags
        memo = self.loop_memo if rdep else self.memo
        key = (v, idx, cnd)
        if rdep and key not in memo and key in self.kept and self.kept[key][2] in self.closed:
            memo[key] = H(self.assign(f"{self.kept[key][0]}[rindex]", True), self.kept[key][1])
            self.used.add(key)
        if key not in memo:
            n = self.prod.get(v)
            # NOTE: a value read at an index that does not vary with x is computed once, before the
            # loop (the compiler cannot hoist it: outputs might alias the inputs it loads)
            saved, self.xdep = self.xdep, "x" in tags
            try:
                memo[key] = self.load(v, idx, cnd, rdep) if n is None else self.compute(n, v, idx, cnd, rdep)
            finally:
                self.xdep = saved
            if rdep and n is not None and n.op not in VIEWS:
                self.loops_of.setdefault(key, set()).add(self.loop_id)
                if key in self.keep and memo[key].const is None:
                    # NOTE: computed once per row, read back by the later loops (not recomputed)
                    buf = f"row{next(self.tmp)}"
                    self.pre.line(f"{buf} = np.empty({self.plan.rnumel}, {nb_type(memo[key].dtype)})")
                    self.loop.line(f"{buf}[rindex] = {memo[key].code}")
                    self.kept[key] = (buf, memo[key].dtype, id(self.loop))
        return memo[key]

    def load(self, v: Value, idx, cnd, rdep) -> H:
        expr = f"{self.args[v]}[{_offset(idx, v)}]"
        if cnd:    # NOTE: off the condition the address may be out of bounds: never read it
            expr = f"({expr} if {' & '.join(f'({c.code()})' for c in cnd)} else {literal(0, v.dtype)})"
        return H(self.assign(expr, rdep), v.dtype)

    def loaded(self, ix: Value, idx, cnd, size) -> Sym:
        node = self.node
        h = self.emit(ix, idx, cnd)
        if h.const is None and (h.code, size) not in self.checked:
            # NOTE: offsets are unsigned (`_offset`): a bad index must never reach a subscript. The
            # loop stops here; the host runs the group's numpy ops again, whose check names the value
            self.checked.add((h.code, size))
            rdep = self.red and "r" in index_tags(idx, cnd)
            b = self.buf(rdep, self.xdep or any(r not in self.pre_names for r in _REFS.findall(h.code)))
            b.line(f"if {h.code} < 0 or {h.code} >= {size}:")
            b.line(f"    raise IndexError({index_op(node) + ': index out of range'!r})")
        return Sym(h.code, size, index_tags(idx, cnd))

    def compute(self, n: Node, v: Value, idx, cnd, rdep) -> H:
        op, out = n.op, v.type.dtype
        if op == "full":
            return H(literal(n.attrs["value"], out), out, n.attrs["value"])
        if op == "iota":
            e = idx[n.attrs["axis"]]
            return H(self.assign(f"{nb_type(out)}({e.code()})", rdep), out)
        if is_reduction(n):
            return self.reduce(n, idx, cnd)
        self.node = n
        reads = node_reads(n, idx, cnd, self.plan, self.loaded)
        if op in VIEWS:
            return self.emit(*reads[0])
        if op in REDUCTIONS:          # over one element: the element itself
            h = self.emit(*reads[0])
            return h if op != "argmax" else H("np.int64(0)", int64, 0)
        if op in ("take", "gather"):
            return self.emit(*reads[1])
        if op == "pad":
            c = reads[0][2][len(cnd):]
            h = self.emit(*reads[0])
            if not c:
                return h
            cond = " & ".join(f"({x.code()})" for x in c)
            return H(self.assign(f"({h.code} if {cond} else {literal(n.attrs['value'], out)})", rdep), out)
        if op == "concat":
            hs = [(self.emit(*r), r[2][len(cnd):]) for r in reads]
            expr = hs[-1][0].code
            for h, c in reversed(hs[:-1]):
                cond = " & ".join(f"({x.code()})" for x in c) or "True"
                expr = f"({h.code} if {cond} else {expr})"
            return H(self.assign(expr, rdep), out)
        args = [self.emit(*r) for r in reads]
        kw = {}
        if op == "where" and self._first_max(n):     # max-pool's tree: where(a >= b | isnan(a), a, b)
            op, args = "maximum", args[1:]
        if op == "pow" and args[1].const is not None:
            kw["exponent"] = args[1].const
        if op == "where" and out == float32 and args[1].dtype == args[2].dtype == float32 and \
                self.loaded_mask(n.inputs[0]):
            return H(self.assign(f"select_f32({args[0].code}, {args[1].code}, {args[2].code})", rdep), out)
        expr = LOWER[op]([h.code for h in args], [h.dtype for h in args], out, **kw)
        if out != bool_ and op != "cast":   # NOTE: keeps fp32 math in fp32 (numba widens mixed operands)
            expr = f"{nb_type(out)}({expr})"
        return H(self.assign(expr, rdep), out)

    def loaded_mask(self, v: Value) -> bool:
        """Whether v is a boolean buffer read (through views): a select on it goes branchless
        (runtime/cpu_select.py). A select on a compare made in the loop stays one: LLVM vectorizes
        those (relu's forward, 0.17 ms; 0.56 ms branchless and scalar)."""
        n = self.prod.get(v)
        while n is not None and n.op in VIEWS:
            v, n = n.inputs[0], self.prod.get(n.inputs[0])
        return n is None and v.dtype == bool_

    def _first_max(self, n: Node) -> bool:
        """Whether `where(c, a, b)` is `where(a >= b | isnan(a), a, b)`: np.maximum(a, b) exactly."""
        _, a, b = n.inputs
        c = self.prod.get(n.inputs[0])
        if c is None or c.op != "logical_or" or not a.dtype.is_floating:
            return False
        parts = sorted((self.prod.get(v) for v in c.inputs), key=lambda m: m is None or m.op)
        return all(m is not None for m in parts) and [m.op for m in parts] == ["ge", "isnan"] and \
            parts[0].inputs == (a, b) and parts[1].inputs == (a,)

    def reduce(self, n: Node, idx, cnd) -> H:
        (x, sub, c), = node_reads(n, idx, cnd, self.plan, self.loaded)
        out, k = n.out.dtype, next(self.tmp)
        if n.op != "sum" and x.dtype == bool_:
            raise Unsupported(f"{n.op} of booleans")
        acc_t = (float64 if x.dtype.is_floating else int64) if n.op == "sum" else x.dtype
        acc = f"acc{k}"
        init = literal(0, acc_t) if n.op == "sum" else \
            literal(-math.inf, acc_t) if acc_t.is_floating else f"{nb_type(acc_t)}({-(1 << (8 * acc_t.itemsize - 1))})"
        self.outer.line(f"{acc} = {init}")
        if n.op == "argmax":
            self.outer.line(f"{acc}_i = np.int64(0)")
        saved = self.loop, self.loop_memo
        self.loop, self.loop_memo = Lines(self.outer.level + 1), {}
        self.loop_id += 1
        h = self.emit(x, sub, c)
        b = self.loop
        for v, vidx in self.early if self.loop_id == 1 else ():
            self.store(v, vidx, self.emit(v, vidx))
        if n.op == "sum":
            b.line(f"{acc} += {h.code}")
        elif n.op == "max":
            b.line(f"if ({h.code} > {acc}) | ({h.code} != {h.code}):")
            b.line(f"    {acc} = {h.code}")
        else:   # argmax: the first maximum (or the first NaN), as numpy
            b.line(f"if ({h.code} > {acc} or ({h.code} != {h.code} and {acc} == {acc})) or rindex == 0:")
            b.line(f"    {acc} = {h.code}")
            b.line(f"    {acc}_i = rindex")
        self.loop, self.loop_memo = saved
        self.outer.line(f"for rindex in range({self.plan.rnumel}):")
        self.outer.lines.extend(b.lines)
        self.closed.add(id(b))
        if n.op == "argmax":
            return H(f"{acc}_i", int64)
        return H(self.assign(f"{nb_type(out)}({acc})", False), out)

    def store(self, v: Value, idx, h: H) -> None:
        rdep = self.red and depends_on(idx, "r")
        self.buf(rdep).line(f"{self.args[v]}[{_offset(idx, v)}] = {h.code}")

    def write(self, outputs) -> list[str]:
        """Lines of `for xindex ...` computing and storing `outputs`."""
        later = []
        if self.red:
            # NOTE: a row output that no reduction feeds is stored by the first reduction's loop,
            # which computes the same values, rather than recomputed in a loop of its own
            self.early = [(v, idx) for v in outputs for idx, row in [self.plan.store_index(v)]
                          if not row and not after_reduction(self.prod, v)]
            # NOTE: reductions first, in order, so a row buffer is written before it is read
            for n in self.body.nodes:
                if is_reduction(n):
                    self.emit(n.out, self.plan.store_index(n.out)[0])
        for v in outputs:
            idx, row = self.plan.store_index(v)
            if self.red and not row:
                if (v, idx) not in self.early:
                    later.append((v, idx))
                continue
            self.store(v, idx, self.emit(v, idx))
        if later:
            self.loop, self.loop_memo = Lines(self.outer.level + 1), {}
            self.loop_id += 1
            for v, idx in later:
                self.store(v, idx, self.emit(v, idx))
            body, self.loop = self.loop, None
            self.outer.line(f"for rindex in range({self.plan.rnumel}):")
            self.outer.lines.extend(body.lines)
        pad = "    " * self.level
        if self.red and not self.keep:
            swapped = interchange(self.outer.lines, self.level, self.plan.xnumel)
            if swapped is not None:
                self.inner, accs, body = swapped
                return self.pre.lines + [f"{pad}{a} = np.empty({self.inner}, np.{t})" for a, t in accs] + \
                    [f"{pad}for xo in range(x0, x1):"] + body
        if self.plan.tile:
            self.inner = self.plan.tile
            return self.pre.lines + [f"{pad}for xo in range(x0, x1):", f"{pad}    for xi in range({self.inner}):",
                                     f"{pad}        xindex = xo * {self.inner} + xi"] + ["    " + b for b in self.outer.lines]
        if not self.red:      # NOTE: the caller writes the loop again over rows of `inner` (KernelPlan.tile)
            self.inner = row_tile(self.outer.lines, self.plan.xnumel)
        return self.pre.lines + [f"{pad}for xindex in range(x0, x1):"] + (self.outer.lines or [pad + "    pass"])


def _offset(idx, v: Value) -> str:
    """The flat offset of `idx` in `v`, as an unsigned integer. An offset is never negative (reads off
    a condition are not taken; a gathered index is checked in the loop first), but numba cannot know that:
    a signed index gets Python's wraparound (a compare and select per access), which keeps LLVM
    from vectorizing the loop; a fused bias + GELU on [1024, 512] took 0.76 ms so, 0.10 ms unsigned."""
    off = linearize(idx, v.shape).code()
    return off if off.isdigit() else f"np.uint64({off})"


def write_kernel(name: str, body: Graph, kind: str) -> list[CpuKernelSource]:
    """The numba sources of one kernel node's body: one function, or one per foreach part (each
    its own call, so parts of one layout share a compile); raises Unsupported where it cannot."""
    check_supported(body)
    parts = body.meta["parts"] if kind == "foreach" else [body]
    out = []
    for k, part in enumerate(parts):
        plan = make_plan(part)
        prod = {o: n for n in part.nodes for o in n.outputs}
        if any(rng_state_out(prod[v], v) for v in part.outputs):
            raise Unsupported("random state")
        args = list(part.inputs) + list(part.outputs)
        names = {v: f"in_ptr{i}" for i, v in enumerate(part.inputs)}
        names.update({v: f"out_ptr{i}" for i, v in enumerate(part.outputs)})
        w = LoopWriter(part, plan, names, itertools.count(), 1)
        lines = w.write(part.outputs)
        if w.inner and plan.kind == "pointwise":    # tiled: written again with x as xo * D + xi
            w = LoopWriter(part, dataclasses.replace(plan, tile=w.inner), names, itertools.count(), 1)
            lines = w.write(part.outputs)
        keep = {k for k, loops in w.loops_of.items() if len(loops) > 1}
        if keep and plan.rnumel <= ROW_BUFFER_MAX and w.inner is None:    # write again, keeping what several loops read
            w = LoopWriter(part, plan, names, itertools.count(), 1, keep)
            lines = w.write(part.outputs)
            if w.used != keep:    # and once more, keeping only what was read back
                lines = LoopWriter(part, plan, names, itertools.count(), 1, w.used).write(part.outputs)
        fn = name if len(parts) == 1 else f"{name}_{k}"
        inner = w.inner          # tiled or interchanged loops only: the rewrites above are not
        head = ["@numba.njit(cache=True, nogil=True, error_model='numpy', fastmath={'reassoc', 'contract'})",
                f"def {fn}(x0, x1, {', '.join(names[v] for v in args)}):"]
        imports = ["import math", "import numba", "import numpy as np"]
        if any("select_f32(" in line for line in lines):
            imports.append("from tracegrad.runtime.cpu_select import select_f32")
        src = "\n".join(imports + ["", "", TANH32, ""] + head + lines) + "\n"
        # a tiled loop's x range counts rows of `inner` elements
        xnumel, rnumel = (plan.xnumel // inner, plan.rnumel * inner) if inner else (plan.xnumel, plan.rnumel)
        out.append(CpuKernelSource(fn, src, args, xnumel, rnumel))
    return out
