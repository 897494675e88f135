"""`matmul`: batched, broadcasting over leading axes, both operands at least 2-d
(the frontend reshapes vectors)."""
from __future__ import annotations

from ..types import TensorType
from .elementwise import _same_device, broadcast_shapes
from .registry import defop, fail, vjp


def _matmul_infer(ts):
    a, c = ts
    dev = _same_device("matmul", ts)
    if a.ndim < 2 or c.ndim < 2:
        fail("matmul", ts, "operands must be at least 2-d")
    if a.shape[-1] != c.shape[-2]:
        fail("matmul", ts, f"inner dimensions differ: {a.shape[-1]} vs {c.shape[-2]}")
    if a.dtype != c.dtype:
        fail("matmul", ts, f"operands have dtypes {a.dtype.name} and {c.dtype.name}")
    batch = broadcast_shapes("matmul", ts, a.shape[:-2], c.shape[:-2])
    return TensorType(batch + (a.shape[-2], c.shape[-1]), a.dtype, dev)


defop("matmul", "matmul", _matmul_infer, 2)


def transpose_last(b, x):
    nd = len(b.shape(x))
    return b.permute(x, dims=tuple(range(nd - 2)) + (nd - 1, nd - 2))


@vjp("matmul")
def _matmul_vjp(b, n, gs):
    x, w = n.inputs
    g = gs[0]
    return ((lambda: b.sum_to(b.matmul(g, transpose_last(b, w)), b.shape(x))),
            (lambda: b.sum_to(b.matmul(transpose_last(b, x), g), b.shape(w))))
