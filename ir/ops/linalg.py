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


def _shared_grad(b, x, w, g, which):
    """The gradient of a 3-d operand shared by every batch ([1, M, K] against [N, K, P], as a
    convolution's weight) as one product over the batch folded into the contraction, or None.

    NOTE: sum_n g[n] @ w[n]^T is [M, N*P] @ [N*P, K]: one BLAS call of N times the depth instead of N
    small ones and a sum (a small CNN's weight gradient: 6.8 -> ~1.5 ms on one CPU thread)."""
    sx, sw, sg = b.shape(x), b.shape(w), b.shape(g)
    if not (len(sx) == len(sw) == len(sg) == 3) or sg[0] == 1:
        return None
    n = sg[0]
    if which == 0 and sx[0] == 1 and sw[0] == n:
        m, k, p = sx[1], sx[2], sw[2]
        g2 = b.reshape_to(b.permute(g, dims=(1, 0, 2)), (m, n * p))
        w2 = b.reshape_to(b.permute(w, dims=(0, 2, 1)), (n * p, k))
        return b.reshape_to(b.matmul(g2, w2), sx)
    if which == 1 and sw[0] == 1 and sx[0] == n:
        m, k, p = sx[1], sx[2], sw[2]
        x2 = b.reshape_to(b.permute(x, dims=(2, 0, 1)), (k, n * m))
        g2 = b.reshape_to(g, (n * m, p))
        return b.reshape_to(b.matmul(x2, g2), sw)
    return None


@vjp("matmul")
def _matmul_vjp(b, n, gs):
    x, w = n.inputs
    g = gs[0]

    def dx():
        s = _shared_grad(b, x, w, g, 0)
        return b.sum_to(b.matmul(g, transpose_last(b, w)), b.shape(x)) if s is None else s

    def dw():
        s = _shared_grad(b, x, w, g, 1)
        return b.sum_to(b.matmul(transpose_last(b, x), g), b.shape(w)) if s is None else s
    return dx, dw
