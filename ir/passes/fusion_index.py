"""Index arithmetic for fused kernels: how an element of a value maps to elements of its inputs.

Inside a kernel every value is computed *at an index*: a tuple with one integer expression per
axis. Movement ops never copy; they rewrite the index (`permute` swaps entries, `reshape`
linearizes and splits, `slice` scales and shifts, `pad`/`concat` add a condition). Fusion uses
this to decide legality (a reduction must be read at an index that does not vary along the
reduced axes) and the Triton backend uses the same functions to emit loads.

Expressions are affine forms over *atoms* `(base // div) % mod` of a few base symbols
(`xindex`, `rindex`, loaded indices), simplified the way Inductor's ModularIndexing is, so that
splitting and re-merging axes gives back the plain flat index:

    >>> x = Expr.sym(Sym("xindex", 32))
    >>> i, j = unflatten(x, (4, 8))            # (xindex // 8, xindex % 8)
    >>> linearize((i, j), (4, 8)) == x
    True
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Union

from ..graph import Node


@dataclass(frozen=True)
class Sym:
    """A base symbol ranging over [0, size): a kernel's flat index or a loaded index."""
    name: str
    size: int
    tag: str = ""          # "x" / "r": which mask guards it; loaded indices carry their source's tags

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Atom:
    """`(base // div) % mod`; `mod=None` means no modulus. `base` is a Sym or an opaque Expr."""
    base: Union[Sym, "Expr"]
    div: int = 1
    mod: int | None = None

    def hi(self) -> int:
        """Largest value (atoms are never negative on lanes that are kept)."""
        top = self.base.size - 1 if isinstance(self.base, Sym) else self.base.bounds()[1]
        top = max(top, 0) // self.div
        return min(top, self.mod - 1) if self.mod is not None else top

    def tags(self) -> frozenset:
        return frozenset(self.base.tag) if isinstance(self.base, Sym) else self.base.tags()

    def code(self) -> str:
        b = self.base.name if isinstance(self.base, Sym) else f"({self.base.code()})"
        if self.div != 1:
            b = f"({b} // {self.div})"
        return f"({b} % {self.mod})" if self.mod is not None else b


def _atom(base, div=1, mod=None) -> "Expr":
    """An atom, simplified: ranges decide when `//` or `%` does nothing."""
    top = (base.size if isinstance(base, Sym) else base.bounds()[1] + 1)
    if top <= div:
        return Expr.const(0)
    if mod is not None and -(-top // div) <= mod:
        mod = None
    if mod == 1:
        return Expr.const(0)
    return Expr(0, ((Atom(base, div, mod), 1),))


@dataclass(frozen=True)
class Expr:
    """const + sum(coef * atom), kept canonical (sorted, merged) so equal indices compare equal."""
    c: int
    terms: tuple = ()      # ((Atom, coef), ...)

    # -- construction ------------------------------------------------------------------------
    @staticmethod
    def const(c: int) -> "Expr":
        return Expr(int(c), ())

    @staticmethod
    def sym(s: Sym) -> "Expr":
        return _atom(s)

    @staticmethod
    def make(c, terms: dict) -> "Expr":
        terms = _merge({a: k for a, k in terms.items() if k})
        return Expr(int(c), tuple(sorted(terms.items(), key=lambda t: repr(t[0]))))

    # -- arithmetic --------------------------------------------------------------------------
    def __add__(self, other) -> "Expr":
        other = other if isinstance(other, Expr) else Expr.const(other)
        d = dict(self.terms)
        for a, k in other.terms:
            d[a] = d.get(a, 0) + k
        return Expr.make(self.c + other.c, d)

    def __sub__(self, other) -> "Expr":
        other = other if isinstance(other, Expr) else Expr.const(other)
        return self + other * -1

    def __mul__(self, k: int) -> "Expr":
        if k == 0:
            return Expr.const(0)
        return Expr.make(self.c * k, {a: c * k for a, c in self.terms})

    def floordiv(self, k: int) -> "Expr":
        if k == 1:
            return self
        q = {a: c // k for a, c in self.terms if c % k == 0}
        rest = Expr.make(self.c % k, {a: c for a, c in self.terms if c % k})
        qe = Expr.make(self.c // k, q)
        lo, hi = rest.bounds()
        if 0 <= lo and hi < k:
            return qe
        single = rest.single()
        if single is not None and isinstance(single.base, Sym) and (single.mod is None or single.mod % k == 0):
            return qe + _atom(single.base, single.div * k, None if single.mod is None else single.mod // k)
        split = rest._split(k)
        if split is not None:    # (g e' + s) // (g k') == e' // k' when 0 <= s < g
            g, big, _ = split
            return qe + big.floordiv(k // g)
        return qe + _atom(rest, k)

    def mod(self, k: int) -> "Expr":
        rest = Expr.make(self.c % k, {a: c for a, c in self.terms if c % k})
        lo, hi = rest.bounds()
        if 0 <= lo and hi < k:
            return rest
        single = rest.single()
        if single is not None and isinstance(single.base, Sym) and (single.mod is None or single.mod % k == 0):
            return _atom(single.base, single.div, k)
        split = rest._split(k)
        if split is not None:    # (g e' + s) % (g k') == g (e' % k') + s when 0 <= s < g
            g, big, small = split
            return big.mod(k // g) * g + small
        return _atom(rest, 1, k)

    def _split(self, k: int):
        """(g, e', s) with self == g e' + s, g | k, g > 1 and 0 <= s < g, if there is one."""
        for g in sorted({math.gcd(c, k) for _, c in self.terms} - {1, k}, reverse=True):
            big = Expr.make(self.c - self.c % g, {a: c // g for a, c in self.terms if c % g == 0})
            big = Expr.make(big.c // g, dict(big.terms))
            small = Expr.make(self.c % g, {a: c for a, c in self.terms if c % g})
            lo, hi = small.bounds()
            if 0 <= lo and hi < g:
                return g, big, small
        return None

    # -- queries -----------------------------------------------------------------------------
    def single(self) -> Atom | None:
        """The atom, if this is exactly one atom with coefficient 1."""
        if self.c == 0 and len(self.terms) == 1 and self.terms[0][1] == 1:
            return self.terms[0][0]
        return None

    def bounds(self) -> tuple[int, int]:
        lo = hi = self.c
        for a, k in self.terms:
            top = a.hi() * k
            lo, hi = (lo, hi + top) if k > 0 else (lo + top, hi)
        return lo, hi

    def tags(self) -> frozenset:
        out = frozenset()
        for a, _ in self.terms:
            out |= a.tags()
        return out

    @property
    def is_const(self) -> bool:
        return not self.terms

    def code(self) -> str:
        parts = []
        for a, k in self.terms:
            s = a.code()
            parts.append(s if k == 1 else f"{k} * {s}" if k > 0 else f"-{-k} * {s}" if k != -1 else f"-{s}")
        if self.c or not parts:
            parts.append(str(self.c))
        out = parts[0]
        for p in parts[1:]:
            out += f" - {p[1:]}" if p.startswith("-") else f" + {p}"
        return out

    def __repr__(self) -> str:
        return self.code()


def _merge(terms: dict) -> dict:
    """k*((b//a)%m) + k*m*((b//(a*m))%n) == k*((b//a)%(m*n)): re-merge axes a reshape split."""
    changed = True
    while changed:
        changed = False
        for a1, k1 in list(terms.items()):
            if a1 not in terms or a1.mod is None:
                continue
            for a2, k2 in list(terms.items()):
                if a2 is a1 or a2 == a1 or a2.base != a1.base or a2.div != a1.div * a1.mod or k2 != k1 * a1.mod:
                    continue
                del terms[a1], terms[a2]
                new = _atom(a1.base, a1.div, None if a2.mod is None else a1.mod * a2.mod)
                for a, k in new.terms:
                    terms[a] = terms.get(a, 0) + k * k1
                changed = True
                break
            if changed:
                break
    return {a: k for a, k in terms.items() if k}


Index = tuple  # tuple[Expr, ...], one per axis


@dataclass(frozen=True)
class Cond:
    """lo <= e < hi, a lane condition from pad/concat."""
    e: Expr
    lo: int | None
    hi: int | None

    def code(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"({self.e.code()} >= {self.lo})")
        if self.hi is not None:
            parts.append(f"({self.e.code()} < {self.hi})")
        return " & ".join(parts)


def within(e: Expr, n: int) -> Expr:
    """`e`, known to lie in [0, n) wherever it is read: a padded input's index, read only on the
    lanes its condition keeps (elsewhere the pad value stands in). An opaque symbol of that range,
    so the reshapes after it divide by what the range allows (col2im's `(i + 14 j) // 196` is 0)."""
    lo, hi = e.bounds()
    if 0 <= lo and hi < n:
        return e
    return Expr.sym(Sym(f"({e.code()})", n, "".join(sorted(e.tags()))))


def cond(e: Expr, lo=None, hi=None) -> tuple:
    blo, bhi = e.bounds()
    lo = None if lo is None or blo >= lo else lo
    hi = None if hi is None or bhi < hi else hi
    return () if lo is None and hi is None else (Cond(e, lo, hi),)


def strides(shape) -> tuple[int, ...]:
    out, s = [], 1
    for n in reversed(shape):
        out.append(s)
        s *= n
    return tuple(reversed(out))


@functools.lru_cache(maxsize=1 << 16)     # NOTE: pure; fusion asks the same of every candidate group
def linearize(idx: Index, shape) -> Expr:
    out = Expr.const(0)
    for e, s in zip(idx, strides(shape)):
        out = out + e * s
    return out


@functools.lru_cache(maxsize=1 << 16)
def unflatten(flat: Expr, shape) -> Index:
    out = []
    for d, (n, s) in enumerate(zip(shape, strides(shape))):
        e = flat.floordiv(s)
        out.append(e.mod(n) if d else e)
    return tuple(Expr.const(0) if n == 1 else e for e, n in zip(out, shape))


def broadcast_index(idx: Index, out_shape, in_shape) -> Index:
    """The index into an input that numpy-broadcasts to `out_shape`."""
    lead = len(out_shape) - len(in_shape)
    return tuple(Expr.const(0) if n == 1 else idx[lead + i] for i, n in enumerate(in_shape))


def depends_on(idx, tag: str) -> bool:
    return any(tag in e.tags() for e in idx)


# -- how each index-only op maps its output index to its input's ---------------------------------
def movement_index(node: Node, idx: Index) -> tuple[Index, tuple]:
    """(input index, extra lane conditions) for a reshape/permute/expand/slice/pad node."""
    src = node.inputs[0].shape
    a = node.attrs
    if node.op == "reshape":
        return unflatten(linearize(idx, node.out.shape), src), ()
    if node.op == "permute":
        out = [None] * len(src)
        for i, d in enumerate(a["dims"]):
            out[d] = idx[i]
        return tuple(out), ()
    if node.op == "expand":
        return broadcast_index(idx, a["shape"], src), ()
    if node.op == "slice":
        return tuple(e * st + lo for e, lo, st in zip(idx, a["starts"], a["steps"])), ()
    if node.op == "pad":
        conds = ()
        out = []
        for e, (lo, hi), n in zip(idx, a["pads"], src):
            c = cond(e, lo, lo + n)
            conds += c
            out.append(within(e - lo, n) if c else e - lo)
        return tuple(out), conds
    if node.op == "stop_gradient":
        return idx, ()
    raise KeyError(node.op)


def concat_pieces(node: Node, idx: Index) -> list[tuple[Index, tuple]]:
    """For each input of a concat: its index and the condition under which it supplies the lane."""
    axis, at, out = node.attrs["axis"], 0, []
    e = idx[axis]
    for v in node.inputs:
        n = v.shape[axis]
        sub = tuple(x - at if i == axis else x for i, x in enumerate(idx))
        out.append((sub, cond(e, at, at + n)))
        at += n
    return out


def reduce_input_index(node: Node, idx: Index, r_index: Index) -> Index:
    """The input index of a reduction read at output `idx`, with `r_index` over the reduced axes."""
    axes = node.attrs["axes"] if node.op != "argmax" else (node.attrs["axis"],)
    keep = node.attrs["keepdim"]
    src = node.inputs[0].shape
    out, k, r = [], 0, iter(r_index)
    for d in range(len(src)):
        if d in axes:
            out.append(next(r))
            k += keep
        else:
            out.append(idx[k])
            k += 1
    return tuple(out)


def reduce_axes(node: Node) -> tuple[int, ...]:
    return tuple(node.attrs["axes"]) if node.op != "argmax" else (node.attrs["axis"],)
