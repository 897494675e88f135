"""What a numpy program's lowering expressions call besides numpy, for CuPy arrays: the CUDA
twin of `numpy_kernels.py` (scatter-adds, iota, random draws, erf, sigmoid)."""
from __future__ import annotations

import functools

from . import rng
from .comm import SingleProcess
from .devices import cupy


class CupyKernels:
    """What numpy_kernels gives a generated numpy program, for CuPy arrays."""

    def __init__(self, cp):
        import cupyx
        import cupyx.scipy.special as special
        self.cp, self.cupyx, self.special = cp, cupyx, special

    def erf(self, x):
        return self.special.erf(x)

    def sigmoid(self, x):
        return self.special.expit(x)

    def index_add(self, x, idx, src, axis):
        out = x.copy()
        self.cupyx.scatter_add(out, (slice(None),) * axis + (idx,), src)
        return out

    def scatter_add(self, x, idx, src, axis):
        out = x.copy()
        # CuPy's indices() has no sparse=; open grids from arange broadcast the same way
        where = [self.cp.arange(n).reshape([-1 if a == d else 1 for a in range(idx.ndim)])
                 for d, n in enumerate(idx.shape)]
        where[axis] = idx
        self.cupyx.scatter_add(out, tuple(where), src)
        return out

    def iota(self, shape, axis, dtype):
        cp = self.cp
        ar = cp.arange(shape[axis] if shape else 1, dtype=dtype)
        ar = ar.reshape(tuple(-1 if i == axis else 1 for i in range(len(shape)))) if shape else ar.reshape(())
        return cp.ascontiguousarray(cp.broadcast_to(ar, shape))

    def select(self, cond, a, b):
        return self.cp.where(cond, a, b)

    def pad(self, x, pads, value):
        return self.cp.pad(x, pads, constant_values=value)

    def rand_uniform(self, state, shape, dtype):
        return rng.draw("uniform", state, shape, dtype, xp=self.cp)

    def rand_normal(self, state, shape, dtype):
        return rng.draw("normal", state, shape, dtype, xp=self.cp)


@functools.lru_cache(maxsize=None)
def namespace(comm=None) -> dict:
    """What a numpy program's lowering expressions call, with CuPy in numpy's place."""
    cp = cupy()
    k = CupyKernels(cp)
    ns = {name: getattr(k, name) for name in ("erf", "sigmoid", "index_add", "scatter_add", "iota",
                                                "rand_uniform", "rand_normal", "select", "pad")}
    ns.update(np=cp, bfloat16=cp.float32, comm=comm or SingleProcess())
    return ns
