"""Triton source for one fused kernel, by plain string building with an indenting buffer.

A kernel node's body is walked from its outputs: each value is computed at the index its
reader needs (see `ir.passes.fusion_plan`), movement ops only rewrite indices, and every value
gets one `tmpN` per distinct index. Three shapes of kernel come out:

    pointwise    xindex = program_id * XBLOCK + arange(XBLOCK); one lane per output element
    reduction    lanes [XBLOCK, RBLOCK]: rows x row elements; persistent (the whole row in one
                 block) when it fits, else one loop over row blocks per reduction and a last one
                 that writes the row-shaped outputs (recomputing cheap producers, never storing);
                 a row output that no reduction feeds is stored by the first loop instead
    foreach      independent pointwise parts, one `if pid < ...` branch each

A column reduction (`plan.outer`: the innermost axis is kept, e.g. a bias gradient) has the same
source; its blocks are wide in x and short in r (`triton_codegen.launch_config`), so Triton lays the
lanes along the contiguous x axis, and its column stays in registers only up to 256 elements
(fusion splits long columns into two stages first: `fusion_emit.split_reductions`).

Half-precision inputs are loaded as they are and computed in fp32, rounded once per op like the
numpy reference; reductions accumulate in fp32 (their lines: `triton_reduce.ReductionWriter`).
"""
from __future__ import annotations

import itertools

from ..ir.graph import Graph, Node, Value
from ..ir.ops.registry import ELEMENTWISE, get
from ..ir.passes.fusion_index import Sym, depends_on, linearize
from ..ir.passes.fusion_plan import (RANDOM, REDUCTIONS, VIEWS, KernelPlan, after_reduction, index_tags,
                                     is_reduction, make_plan, node_reads, rng_state_out)
from ..ir.types import DType, bool_, float32, int64
from .index_sites import Sites, guard_index
from .kernel_source import Buf, KernelSource, next_pow2
from .kernel_values import H
from .nan_sites import NanSites, scan_value
from ..runtime import rng
from .triton_ops import HALF, LOWER, compute_dtype, literal, tl_dtype
from .triton_reduce import ReductionWriter

PERSISTENT_MAX = 16384     # rows up to this many elements stay in registers (one read of the input)
OUTER_PERSISTENT_MAX = 256   # column reductions: a block holds many columns, so only short columns fit


class KernelWriter(ReductionWriter):
    def __init__(self, body: Graph, plan: KernelPlan, args: dict[Value, str], counter, level: int = 1,
                 persistent_max: int = PERSISTENT_MAX, xblock: str = "XBLOCK", sites: Sites | None = None,
                 nans: NanSites | None = None):
        self.body, self.plan, self.args, self.xblock = body, plan, args, xblock
        self.sites, self.safe, self.node = sites, {}, None    # index checks: see index_sites.py
        self.nans, self.nan_seen, self.kernel_name = nans, set(), ""   # NaN checks: see nan_sites.py
        self.prod = {o: n for n in body.nodes for o in n.outputs}
        self.red = plan.kind == "reduction"
        limit = min(persistent_max, OUTER_PERSISTENT_MAX) if plan.outer else persistent_max
        self.persistent = not self.red or next_pow2(plan.rnumel) <= limit
        self.outer = Buf(level)
        self.loop: Buf | None = None
        self.memo: dict = {}
        self.loop_memo: dict = {}
        self.tmp = counter
        self.states: dict = {}
        self.access: dict[Value, tuple] = {}      # see KernelSource.access; one part here
        self.early: list = []      # row outputs no reduction feeds: stored by the first reduction loop

    def note_access(self, v: Value, offset: str) -> None:
        self.access[v] = (0, self.access.get(v, (0, frozenset()))[1] | {offset})

    # -- buffers ----------------------------------------------------------------------------------
    def buf(self, rdep: bool) -> Buf:
        if rdep and not self.persistent:
            assert self.loop is not None, "a row-dependent value outside a reduction loop"
            return self.loop
        return self.outer

    def assign(self, expr: str, rdep: bool, node: Node | None = None, note: str = "") -> str:
        b = self.buf(rdep)
        if node is not None and node.prov is not None and node.prov != b.prov:
            b.line(f"# {node.prov}")
            b.prov = node.prov
        name = f"tmp{next(self.tmp)}"
        b.line(f"{name} = {expr}" + (f"  # {note}" if note else ""))
        return name

    # -- the walk ---------------------------------------------------------------------------------
    def emit(self, v: Value, idx: tuple, cnd: tuple = ()) -> H:
        rdep = self.red and (depends_on(idx, "r") or any("r" in c.e.tags() for c in cnd))
        memo = self.loop_memo if rdep and not self.persistent else self.memo
        key = (v, idx, cnd)
        if key not in memo:
            n = self.prod.get(v)
            h = self.load(v, idx, cnd, rdep) if n is None else self.compute(n, v, idx, cnd, rdep)
            if self.nans is not None and n is not None and h.const is None and v.dtype.is_floating:
                scan_value(self, n, v, h.code, self.mask(idx, cnd), rdep)
            memo[key] = h
        return memo[key]

    def mask(self, idx, cnd) -> str:
        tags = index_tags(idx, cnd)
        parts = [m for t, m in (("x", "xmask"), ("r", "rmask")) if t in tags] + [f"({c.code()})" for c in cnd]
        return " & ".join(parts)

    def load(self, v: Value, idx, cnd, rdep) -> H:
        off = linearize(idx, v.shape)
        ptr = self.args[v]
        self.note_access(v, f"{off.code()} if {self.mask(idx, cnd)}")
        mask = self.mask(idx, cnd)
        if not mask:
            expr = f"tl.load({ptr} + ({off.code()}))" if off.code() != "0" else f"tl.load({ptr})"
        else:
            code, have, want = off.code(), off.tags(), index_tags(idx, cnd)
            for t, var in (("x", "xindex"), ("r", "rindex")):
                if t in want and t not in have:    # a lane condition on an address that does not vary
                    code += f" + 0 * {var}"
            other = "0" if not v.dtype.is_floating else "0.0"
            expr = f"tl.load({ptr} + ({code}), {mask}, other={other})"
        return H(self.assign(expr, rdep, note=v.name), v.dtype)

    def loaded(self, ix: Value, idx, cnd, size) -> Sym:
        node = self.node
        h = self.emit(ix, idx, cnd)
        code = h.code
        if self.sites is not None and h.const is None:    # NOTE: a bad index is flagged, then read as 0
            rdep = self.red and (depends_on(idx, "r") or any("r" in c.e.tags() for c in cnd))
            if (code, size) not in self.safe:
                self.safe[code, size] = guard_index(self, node, code, size, self.mask(idx, cnd), rdep)
            code = self.safe[code, size]
        return Sym(code, size, index_tags(idx, cnd))

    def compute(self, n: Node, v: Value, idx, cnd, rdep) -> H:
        op, out = n.op, v.type.dtype
        if op == "full":
            return H(literal(n.attrs["value"], out), out, n.attrs["value"])
        if op == "iota":
            e = idx[n.attrs["axis"]]
            return H(self.assign(f"({e.code()}) + tl.zeros([], {tl_dtype(out)})" if not e.is_const
                                 else literal(e.c, out), rdep, n), out)
        if op in RANDOM:
            return self.random(n, v, idx, rdep)
        if is_reduction(n):
            return self.reduce(n, idx, cnd)
        self.node = n       # whose index `loaded` checks
        reads = node_reads(n, idx, cnd, self.plan, self.loaded)
        if op in VIEWS:
            return self.emit(*reads[0])
        if op in REDUCTIONS:          # over one element: the element itself
            h = self.emit(*reads[0])
            return h if op != "argmax" else H(literal(0, int64), int64, 0)
        if op in ("take", "gather"):
            return self.emit(*reads[1])
        if op == "pad":
            sub, c = reads[0][1], reads[0][2][len(cnd):]
            h = self.emit(reads[0][0], sub, reads[0][2])
            cond = " & ".join(f"({x.code()})" for x in c)
            if not cond:
                return h
            return H(self.assign(f"tl.where({cond}, {h.code}, {literal(n.attrs['value'], out)})", rdep, n), out)
        if op == "concat":
            hs = [(self.emit(*r), r[2][len(cnd):]) for r in reads]
            expr = hs[-1][0].code
            for h, c in reversed(hs[:-1]):
                cond = " & ".join(f"({x.code()})" for x in c) or "True"
                expr = f"tl.where({cond}, {h.code}, {expr})"
            return H(self.assign(expr, rdep, n), out)
        assert get(op).kind in ELEMENTWISE, op
        args = [self.emit(*r) for r in reads]
        return self.elementwise(n, args, out, rdep)

    def elementwise(self, n: Node, args: list[H], out: DType, rdep: bool) -> H:
        ins = [h.dtype for h in args]
        cd = compute_dtype(n.op, ins)
        codes = [h.code if cd is None or h.dtype == cd or h.const is not None else f"{h.code}.to({tl_dtype(cd)})"
                 for h in args]
        kw = {}
        if n.op == "pow" and args[1].const is not None:
            kw["exponent"] = args[1].const
        expr = LOWER[n.op](codes, [cd or d for d in ins], out, **kw)
        if cd is not None and out in HALF:
            expr = f"({expr}).to({tl_dtype(out)})"
        return H(self.assign(expr, rdep, n), out)

    # -- random numbers ---------------------------------------------------------------------------
    def state(self, s: Value) -> tuple[str, str]:
        """(seed, offset) expressions of an RNG state value."""
        if s in self.states:
            return self.states[s]
        n = self.prod.get(s)
        if n is not None and n.op in RANDOM:
            seed, off = self.state(n.inputs[0])
            out = seed, f"({off} + {n.outputs[0].type.numel})"
        else:
            p = self.args[s]
            out = (self.assign(f"tl.load({p})", False, note=f"{s.name} seed"),
                   self.assign(f"tl.load({p} + 1)", False, note=f"{s.name} offset"))
        self.states[s] = out
        return out

    def random(self, n: Node, v: Value, idx, rdep) -> H:
        seed, off = self.state(n.inputs[0])
        ctr = linearize(idx, v.shape)
        c = f"{off} + ({ctr.code()})" if not ctr.is_const else f"{off} + {ctr.c}"
        g = [(rng.GOLDEN * (s + 1)) & rng.MASK for s in range(3)]
        if n.op == "rand_uniform":
            expr = f"rng_uniform({seed}, {c}, {g[0]})"
        else:
            expr = f"rng_normal({seed}, {c}, {g[1]}, {g[2]})"
        out = v.type.dtype
        if out != float32:
            expr = f"({expr}).to({tl_dtype(out)})"
        return H(self.assign(expr, rdep, n), out)

    def store_state(self, v: Value) -> None:
        n = self.prod[v]
        seed, off = self.state(n.inputs[0])
        b = self.outer
        b.line(f"if tl.program_id(0) == 0:  # {v.name}: the advanced RNG state")
        with b.indent():
            b.line("two = tl.arange(0, 2)")
            b.line(f"tl.store({self.args[v]} + two, tl.where(two == 0, {seed}, {off} + {n.outputs[0].type.numel}))")

    # -- the kernel -------------------------------------------------------------------------------
    def header(self, pid: str = "tl.program_id(0)") -> None:
        b, p = self.outer, self.plan
        wide = max([v.type.numel for v in list(self.body.inputs) + list(self.body.outputs)] + [p.xnumel * p.rnumel])
        pid = f"{pid}.to(tl.int64)" if wide >= 2 ** 31 else pid
        if not self.red:
            b.line(f"xindex = {pid} * {self.xblock} + tl.arange(0, {self.xblock})")
            b.line(f"xmask = xindex < {p.xnumel}")
            return
        b.line(f"xindex = {pid} * XBLOCK + tl.arange(0, XBLOCK)[:, None]")
        b.line(f"xmask = xindex < {p.xnumel}")
        if self.persistent:
            b.line("rindex = tl.arange(0, RBLOCK)[None, :]")
            b.line(f"rmask = rindex < {p.rnumel}")

    def store(self, v: Value, idx, h: H) -> None:
        off = linearize(idx, v.shape)
        rdep = self.red and depends_on(idx, "r")
        b = self.buf(rdep)
        tags = off.tags()
        code = off.code()
        # NOTE: the pointer block spans every lane (a row output of one row still has XBLOCK lanes)
        if "x" not in tags:
            code += " + 0 * xindex"
        if rdep and "r" not in tags:
            code += " + 0 * rindex"
        mask = "xmask & rmask" if rdep else "xmask"
        self.note_access(v, f"{off.code()} if {self.mask(idx, ())}")
        val = h.code
        if v.dtype == bool_ and h.const is not None:
            val = "1" if h.const else "0"
        b.line(f"tl.store({self.args[v]} + ({code}), {val}, {mask})  # {v.name}")

    def store_all(self, outs) -> None:
        """Pointwise: every output's value first, then the stores, so that all loads come before
        any store (see KernelSource.can_overwrite)."""
        values = [(v, idx, self.emit(v, idx)) for v, idx in outs]
        for v, idx, h in values:
            self.store(v, idx, h)

    def write(self) -> Buf:
        self.header()
        if not self.red and not any(rng_state_out(self.prod[v], v) for v in self.body.outputs):
            self.store_all([(v, self.plan.store_index(v)[0]) for v in self.body.outputs])
            return self.outer
        later = []
        looped = self.red and not self.persistent
        if looped:
            self.early = [(v, idx) for v in self.body.outputs for idx, row in [self.plan.store_index(v)]
                          if not row and not rng_state_out(self.prod[v], v) and not after_reduction(self.prod, v)]
        early = list(self.early)
        for v in self.body.outputs:
            if rng_state_out(self.prod[v], v):
                continue
            idx, row = self.plan.store_index(v)
            if looped and not row:
                if (v, idx) not in early:
                    later.append((v, idx))
                continue
            self.store(v, idx, self.emit(v, idx))
        if later:    # NOTE: the body first: the reductions it needs emit their own loops before it
            self.loop, self.loop_memo = Buf(self.outer.level + 1), {}
            for v, idx in later:
                self.store(v, idx, self.emit(v, idx))
            body, self.loop = self.loop, None
            self.open_loop(self.outer)
            self.outer.splice(body)
        assert not self.early, "row outputs left for a reduction loop that never came"
        for v in self.body.outputs:
            if rng_state_out(self.prod[v], v):
                self.store_state(v)
        return self.outer


def write_kernel(name: str, body: Graph, kind: str, persistent_max: int = PERSISTENT_MAX,
                 where: str = "", nans: NanSites | None = None) -> KernelSource:
    """The Triton source of one kernel node's body; its take/gather indices are checked (a pointer
    argument `chk_ptr` when there are any, see index_sites.py); `where` names the program. With
    `nans` its float values are scanned for NaNs (a last pointer argument `nan_ptr`, nan_sites.py)."""
    sites = Sites(where)
    extra = {"sites": sites, "nans": nans}
    args = list(body.inputs) + list(body.outputs)
    names = {v: f"in_ptr{i}" for i, v in enumerate(body.inputs)}
    names.update({v: f"out_ptr{i}" for i, v in enumerate(body.outputs)})
    counter = itertools.count()
    if kind == "foreach":
        parts = body.meta["parts"]
        lines = Buf(1)
        lines.line("pid = tl.program_id(0)")
        start = "0"
        numels = []
        access: dict[Value, tuple] = {}
        for k, part in enumerate(parts):
            plan = make_plan(part)
            numels.append(plan.xnumel)
            blocks = f"(({plan.xnumel} + XBLOCK{k} - 1) // XBLOCK{k})"
            end = f"{start} + {blocks}" if start != "0" else blocks
            lines.line(f"{'if' if k == 0 else 'elif'} pid < {end}:")
            w = KernelWriter(part, plan, names, counter, level=2, xblock=f"XBLOCK{k}", **extra)
            w.kernel_name = name
            w.header(pid=f"(pid - ({start}))" if start != "0" else "pid")
            w.store_all([(v, plan.store_index(v)[0]) for v in part.outputs])
            lines.splice(w.outer)
            for v, (_, offs) in w.access.items():
                access[v] = (k if v not in access else -1, offs)
            start = end
        consts = ", ".join(f"XBLOCK{k}: tl.constexpr" for k in range(len(parts)))
        src = _function(name, args, names, consts, lines, sites, nans)
        return KernelSource(name, src, args, None, True, numels, sites.sites, access)
    plan = make_plan(body)
    w = KernelWriter(body, plan, names, counter, persistent_max=persistent_max, **extra)
    w.kernel_name = name
    code = w.write()
    consts = "XBLOCK: tl.constexpr" + (", RBLOCK: tl.constexpr" if plan.kind == "reduction" else "")
    return KernelSource(name, _function(name, args, names, consts, code, sites, nans), args, plan, w.persistent,
                        sites=sites.sites, access=w.access if not w.red else {})


def _function(name, args, names, consts, code: Buf, sites, nans) -> str:
    extra = (["chk_ptr"] if sites.sites else []) + (["nan_ptr"] if nans is not None else [])
    sig = ", ".join([names[v] for v in args] + extra + [consts])
    return "\n".join(["@triton.jit", f"def {name}({sig}):"] + code.lines) + "\n"
