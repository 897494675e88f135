"""The rank grid of a parallel plan: `Mesh(dp=, tp=, pp=, cp=)`.

Ranks are laid out as one array `arange(world).reshape(dp, pp, cp, tp)`: tp innermost (its ranks
are neighbours, on the fastest links), then cp, pp, dp, as picotron lays them out. A rank's group
along an axis is the ranks that differ from it in that axis' coordinate alone.

    >>> m = Mesh(dp=2, tp=2)
    >>> m.group("tp", 3), m.group("dp", 3)
    ((2, 3), (1, 3))
"""
from __future__ import annotations

from dataclasses import dataclass

AXES = ("dp", "pp", "cp", "tp")     # outermost first


@dataclass(frozen=True)
class Mesh:
    """How the ranks divide a step: dp (data), tp (tensor), pp (pipeline), cp (context) parallel."""
    dp: int = 1
    tp: int = 1
    pp: int = 1
    cp: int = 1

    def __post_init__(self):
        for axis in AXES:
            n = getattr(self, axis)
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"Mesh: {axis} must be a positive int, got {n!r}")

    @property
    def size(self) -> int:
        return self.dp * self.tp * self.pp * self.cp

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(getattr(self, a) for a in AXES)

    def coords(self, rank: int) -> dict[str, int]:
        """The coordinates of a global rank: {"dp": i, "pp": j, "cp": k, "tp": l}."""
        if not 0 <= rank < self.size:
            raise ValueError(f"rank {rank} is outside {self} ({self.size} ranks)")
        out = {}
        for axis in reversed(AXES):
            n = getattr(self, axis)
            out[axis] = rank % n
            rank //= n
        return {a: out[a] for a in AXES}

    def rank_of(self, **coords: int) -> int:
        """The global rank at the given coordinates (missing axes: 0)."""
        rank = 0
        for axis in AXES:
            rank = rank * getattr(self, axis) + coords.get(axis, 0)
        return rank

    def group(self, axis: str, rank: int) -> tuple[int, ...]:
        """The ranks that share every coordinate with `rank` but `axis`, in that axis' order."""
        if axis not in AXES:
            raise ValueError(f"Mesh.group: axis must be one of {AXES}, got {axis!r}")
        c = self.coords(rank)
        return tuple(self.rank_of(**{**c, axis: i}) for i in range(getattr(self, axis)))

    def dp_group(self, rank: int) -> tuple[int, ...]:
        return self.group("dp", rank)

    def groups(self, axis: str) -> list[tuple[int, ...]]:
        """Every group along `axis`, each once."""
        return sorted({self.group(axis, r) for r in range(self.size)})
