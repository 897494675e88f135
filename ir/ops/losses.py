"""`cross_entropy` over [N, V] logits and its backward, as composites.

Forward returns (loss, lse): lse (the row logsumexp) is what the backward needs, so a fused
kernel never keeps fp32 probabilities of the whole vocabulary. With smoothing eps:

    loss_i = lse_i - (1 - eps) x[i, t_i] - eps mean_j x[i, j]        (rows with t_i = ignore_index drop out)
    dx[i, j] = (exp(x[i, j] - lse_i) - (1 - eps) [j = t_i] - eps / V) * gy_i
"""
from __future__ import annotations

from ..types import TensorType, int64
from .nn import acc_dtype, upcast
from .registry import decomposition, defop, fail, vjp

ATTRS = dict(ignore_index=-100, label_smoothing=0.0, reduction="mean")


def _ce_infer(ts, ignore_index, label_smoothing, reduction):
    x, t = ts
    if x.ndim != 2 or t.shape != x.shape[:1] or not t.dtype.is_integer:
        fail("cross_entropy", ts, "expected logits [N, V] and integer targets [N]")
    if reduction not in ("mean", "sum", "none"):
        fail("cross_entropy", ts, f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    acc = acc_dtype(x.dtype)
    loss = TensorType(() if reduction != "none" else x.shape[:1], acc, x.device)
    return [loss, TensorType(x.shape[:1], acc, x.device)]


defop("cross_entropy", "composite", _ce_infer, 2, ATTRS, doc="(loss, row logsumexp)")


def _ce_bwd_infer(ts, ignore_index, label_smoothing, reduction):
    x, t, lse, gy = ts
    return x


defop("cross_entropy_bwd", "composite", _ce_bwd_infer, 4, ATTRS, doc="(logits, target, lse, gy) -> dlogits")


def _valid(b, t, ignore_index):
    ok = b.ne(t, ignore_index)
    return ok, b.where(ok, t, 0)


def _row_scale(b, gy, ok, reduction):
    """Per-row weight of dloss: gy/count (mean), gy (sum) or gy_i (none); zero on ignored rows."""
    okf = b.cast_to(ok, b.dtype(gy))
    if reduction == "none":
        return b.mul(gy, okf)
    if reduction == "mean":
        gy = b.div(gy, b.sum(okf, axes=(0,)))
    return b.mul(b.expand_to(gy, b.shape(okf)), okf)


@decomposition("cross_entropy")
def _ce(b, x, t, ignore_index, label_smoothing, reduction):
    xf = upcast(b, x)
    m = b.max(xf, axes=(1,), keepdim=True)
    lse = b.add(b.log(b.sum(b.exp(b.sub(xf, m)), axes=(1,), keepdim=True)), m)
    ok, safe_t = _valid(b, t, ignore_index)
    picked = b.gather(xf, b.reshape_to(b.cast_to(safe_t, int64), (b.shape(t)[0], 1)), axis=1)
    loss = b.sub(lse, b.mul(picked, 1.0 - label_smoothing))
    if label_smoothing:
        loss = b.sub(loss, b.mul(b.sum(xf, axes=(1,), keepdim=True), label_smoothing / b.shape(x)[1]))
    loss = b.where(b.reshape_to(ok, b.shape(loss)), b.reshape_to(loss, b.shape(loss)), 0.0)
    loss, lse = b.reshape_to(loss, b.shape(t)), b.reshape_to(lse, b.shape(t))
    if reduction == "none":
        return loss, lse
    total = b.sum(loss, axes=(0,))
    if reduction == "mean":
        total = b.div(total, b.sum(b.cast_to(ok, b.dtype(total)), axes=(0,)))
    return total, lse


@decomposition("cross_entropy_bwd")
def _ce_bwd(b, x, t, lse, gy, ignore_index, label_smoothing, reduction):
    n, v = b.shape(x)
    p = b.exp(b.sub(upcast(b, x), b.reshape_to(lse, (n, 1))))
    ok, safe_t = _valid(b, t, ignore_index)
    hot = b.eq(b.iota(shape=(n, v), axis=1, device=b.type_of(x).device), b.reshape_to(b.cast_to(safe_t, int64), (n, 1)))
    target = b.cast_to(hot, b.dtype(p))
    if label_smoothing:
        target = b.add(b.mul(target, 1.0 - label_smoothing), label_smoothing / v)
    dx = b.mul(b.sub(p, target), b.reshape_to(_row_scale(b, gy, ok, reduction), (n, 1)))
    return b.cast_to(dx, b.dtype(x))


@vjp("cross_entropy")
def _ce_vjp(b, n, gs):
    x, t = n.inputs
    loss_g, lse_g = gs
    dx = b.cross_entropy_bwd(x, t, n.outputs[1], loss_g, **n.attrs) if loss_g is not None else None
    if lse_g is not None:
        # NOTE: d lse_i / dx_ij = softmax(x)_ij; the backward reads lse, so grad of grad sends
        # a cotangent here
        p = b.exp(b.sub(upcast(b, x), b.reshape_to(n.outputs[1], (b.shape(x)[0], 1))))
        extra = b.cast_to(b.mul(p, b.reshape_to(lse_g, (b.shape(x)[0], 1))), b.dtype(x))
        dx = extra if dx is None else b.add(dx, extra)
    return dx, None
