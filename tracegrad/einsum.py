"""`einsum` and the named matrix products (`mm`, `bmm`, `dot`, `outer`, `addmm`, `baddbmm`), written
on `matmul`, `permute`, `reshape` and `sum`.

    tg.einsum("bhqd,bhkd->bhqk", q, k)      # one batched matmul: batch bh, rows q, cols k, sum d

Two operands become one matmul: indices in both operands and the output are batch, in both but
not the output are contracted, in one operand and the output are rows or columns; an index in
one operand only and not the output is summed first. More operands are folded left to right.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import math

from .errors import ShapeError
from .functions import matmul

if TYPE_CHECKING:     # annotations only: tensor.py imports this module first
    from .tensor import Tensor


def _parse(eq: str, n: int):
    eq = eq.replace(" ", "")
    if "." in eq:
        raise NotImplementedError(f"einsum {eq!r}: ellipsis (...) is not supported; name every index")
    lhs, _, out = eq.partition("->")
    ins = lhs.split(",")
    if len(ins) != n:
        raise ValueError(f"einsum {eq!r} names {len(ins)} operands, but {n} were given")
    if "->" not in eq:
        counts = {c: lhs.count(c) for c in lhs if c != ","}
        out = "".join(sorted(c for c, k in counts.items() if k == 1))
    return ins, out


def _single(spec: str, x: Tensor, keep: str) -> tuple[str, Tensor]:
    """Sum the indices of `x` that are not in `keep`; diagonals (an index twice) are refused."""
    if len(set(spec)) != len(spec):
        raise NotImplementedError(f"einsum: a repeated index within one operand ({spec!r}, a diagonal) is not supported")
    if len(spec) != x.ndim:
        raise ShapeError(f"einsum: operand spec {spec!r} has {len(spec)} indices, but the tensor has shape "
                         f"{list(x.shape)}")
    drop = [i for i, c in enumerate(spec) if c not in keep]
    if drop:
        x = x.sum(drop)
        spec = "".join(c for c in spec if c in keep)
    return spec, x


def _pair(sa: str, a: Tensor, sb: str, b: Tensor, out: str) -> tuple[str, Tensor]:
    size = {}
    for s, t in ((sa, a), (sb, b)):
        for c, n in zip(s, t.shape):
            if size.setdefault(c, n) != n:
                raise ShapeError(f"einsum: index {c!r} has size {size[c]} in one operand and {n} in another")
    batch = [c for c in sa if c in sb and c in out]
    contract = [c for c in sa if c in sb and c not in out]
    rows = [c for c in sa if c not in sb]
    cols = [c for c in sb if c not in sa]
    a = a.permute(*[sa.index(c) for c in batch + rows + contract])
    b = b.permute(*[sb.index(c) for c in batch + contract + cols])
    nb, nr, nk, nc = (math.prod(size[c] for c in g) for g in (batch, rows, contract, cols))
    y = matmul(a.reshape(nb, nr, nk), b.reshape(nb, nk, nc))
    spec = "".join(batch + rows + cols)
    return spec, y.reshape(*[size[c] for c in spec])


def einsum(equation: str, *operands) -> Tensor:
    """Einstein summation over the operands, as `torch.einsum` (no ellipsis or diagonals)."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    ins, out = _parse(equation, len(operands))
    later = [set("".join(ins[i + 1:])) for i in range(len(ins))]
    spec, acc = _single(ins[0], operands[0], set(out) | set("".join(ins[1:])))
    for i in range(1, len(ins)):
        keep = set(out) | later[i]
        sb, b = _single(ins[i], operands[i], set(out) | set(spec) | later[i])
        spec, acc = _pair(spec, acc, sb, b, "".join(sorted(keep)))
    spec, acc = _single(spec, acc, set(out))
    missing = [c for c in out if c not in spec]
    if missing:
        raise ValueError(f"einsum {equation!r}: output index {missing[0]!r} appears in no operand")
    return acc.permute(*[spec.index(c) for c in out]) if spec != out else acc


def mm(self, mat2) -> Tensor:
    """The product of two 2-d tensors."""
    if self.ndim != 2 or mat2.ndim != 2:
        raise ShapeError(f"mm: both operands must be 2-d, got {list(self.shape)} and {list(mat2.shape)}")
    return matmul(self, mat2)


def bmm(self, mat2) -> Tensor:
    """Batched product of two 3-d tensors with one batch size."""
    if self.ndim != 3 or mat2.ndim != 3 or self.shape[0] != mat2.shape[0]:
        raise ShapeError(f"bmm: both operands must be 3-d with one batch size, got {list(self.shape)} and "
                         f"{list(mat2.shape)}")
    return matmul(self, mat2)


def mv(self, vec) -> Tensor:
    """Matrix times vector."""
    return matmul(self, vec)


def dot(self, other) -> Tensor:
    """Inner product of two 1-d tensors."""
    if self.ndim != 1 or other.ndim != 1:
        raise ShapeError(f"dot: both operands must be 1-d, got {list(self.shape)} and {list(other.shape)}")
    return (self * other).sum()


def outer(self, vec2) -> Tensor:
    """Outer product of two vectors."""
    return self.reshape(-1, 1) * vec2.reshape(1, -1)


def addmm(self, mat1, mat2, *, beta=1, alpha=1) -> Tensor:
    """beta * self + alpha * (mat1 @ mat2)."""
    p = mm(mat1, mat2)
    return (self * beta if beta != 1 else self) + (p * alpha if alpha != 1 else p)


def baddbmm(self, batch1, batch2, *, beta=1, alpha=1) -> Tensor:
    """beta * self + alpha * bmm(batch1, batch2)."""
    p = bmm(batch1, batch2)
    return (self * beta if beta != 1 else self) + (p * alpha if alpha != 1 else p)


class LinalgMethods:
    """Tensor's matrix products (a mixin of `Tensor`)."""
    __slots__ = ()
    mm = mm
    bmm = bmm
    mv = mv
    dot = dot
    outer = outer
    addmm = addmm
    baddbmm = baddbmm
    ger = outer
