"""How one value of a parallel program lies on the ranks of a group: replicated (`R`, every rank
holds all of it), partial (`P`, the value is the sum of what the ranks hold) or sharded
(`S(dim)`, rank i holds the i-th of n equal contiguous blocks along `dim`).

`S(dim, groups=g)` views `dim` as g chunks and shards each chunk: rank i holds the i-th block of
every chunk, side by side. It is how a fused projection (GPT-2's `c_attn`, q|k|v in one matrix)
is split by heads: the later `split` of the chunks keeps every rank's heads of q, k and v.

    >>> S(2).local((4, 8, 96), 2), S(2, 3).local((4, 8, 96), 2)
    ((4, 8, 48), (4, 8, 48))
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Spec:
    kind: str            # "R" | "P" | "S"
    dim: int = -1
    groups: int = 1

    def local(self, shape: tuple, n: int) -> tuple:
        if self.kind != "S":
            return tuple(shape)
        return tuple(s // n if i == self.dim else s for i, s in enumerate(shape))

    def fits(self, shape: tuple, n: int) -> bool:
        return self.kind != "S" or (self.dim < len(shape) and shape[self.dim] % (n * self.groups) == 0)

    def __str__(self) -> str:
        if self.kind != "S":
            return self.kind
        return f"S({self.dim})" if self.groups == 1 else f"S({self.dim}, groups={self.groups})"


R = Spec("R")
P = Spec("P")


def S(dim: int, groups: int = 1) -> Spec:
    return Spec("S", dim, groups)


def reshape_spec(spec: Spec, shape_in: tuple, shape_out: tuple, n: int) -> Spec | None:
    """The sharding of reshape(x, shape_out) when x is `spec`-sharded, if each rank can reshape its
    own block (no data moves); else None.

    NOTE: the block of rank i along dim d with period p = size(d) * stride(d) is the set of flat
    indices f with (f mod p) // (p / n) == i. An output dim o with the same period and a size that
    n divides has the same blocks, so each rank's local reshape is the global one restricted."""
    if spec.kind != "S":
        return spec
    d, g = spec.dim, spec.groups
    period = math.prod(shape_in[d:])
    for o in range(len(shape_out)):
        p = math.prod(shape_out[o:])
        if p % period == 0:      # the same blocks; c > 1 when outer dims merged in ([B, T] -> [B*T])
            c = p // period
            if shape_out[o] % (n * g * c) == 0 and (period // (g * n)) % math.prod(shape_out[o + 1:]) == 0:
                return S(o, g * c)
        if g > 1 and p * g == period and shape_out[o] % n == 0 and o > 0 and shape_out[o - 1] % g == 0:
            return S(o)        # the chunks became a dim of their own: each chunk's block is plain
    return None
