"""`scaled_dot_product_attention` and its backward, as composites.

The forward returns (O, L) where L = logsumexp of each score row, as FlashAttention-2 does
(Dao 2023, Alg. 1); the backward is its own composite op taking L, so a backend with a flash
template runs both as one kernel each and the numpy backend runs their decompositions:

    S = scale Q K^T (+ mask),  P = exp(S - L),  O = P V
    dV = P^T dO,  dP = dO V^T,  D = rowsum(dO * O),  dS = P (dP - D),  dQ = scale dS K,  dK = scale dS^T Q
"""
from __future__ import annotations

import math

from ..types import TensorType, bool_
from .linalg import transpose_last
from .nn import acc_dtype, upcast
from .registry import decomposition, defop, fail, vjp

ATTRS = dict(is_causal=False, scale=None)


def _check(ts, n_fixed):
    q, k, v = ts[:3]
    if not (q.ndim == k.ndim == v.ndim >= 2):
        fail("scaled_dot_product_attention", ts, "q, k, v need the same rank ([..., T, D])")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2] or q.shape[:-2] != k.shape[:-2] \
            or k.shape[:-2] != v.shape[:-2]:
        fail("scaled_dot_product_attention", ts, "expected q [..., T, D], k [..., S, D], v [..., S, Dv]")
    if len({q.dtype, k.dtype, v.dtype}) > 1:
        fail("scaled_dot_product_attention", ts, "q, k, v need one dtype")
    if len(ts) > n_fixed:
        m = ts[n_fixed]
        want = q.shape[:-1] + (k.shape[-2],)
        if len(m.shape) > len(want) or any(a not in (1, b) for a, b in zip(m.shape[::-1], want[::-1])):
            fail("scaled_dot_product_attention", ts, f"attn_mask {list(m.shape)} does not broadcast to {list(want)}")
    return q, k, v


def _sdpa_infer(ts, is_causal, scale):
    q, k, v = _check(ts, 3)
    return [q.with_(shape=q.shape[:-1] + (v.shape[-1],)), TensorType(q.shape[:-1], acc_dtype(q.dtype), q.device)]


defop("scaled_dot_product_attention", "composite", _sdpa_infer, None, ATTRS, doc="(O, logsumexp)")


def _bwd_infer(ts, is_causal, scale):
    q, k, v = _check(ts, 6)
    return [q, k, v]


defop("scaled_dot_product_attention_bwd", "composite", _bwd_infer, None, ATTRS,
      doc="(q, k, v, o, lse, do[, mask]) -> dq, dk, dv")


def _scores(b, q, k, mask, is_causal, scale):
    """scale Q K^T with the causal mask and attn_mask applied, in fp32."""
    d = b.shape(q)[-1]
    s = b.mul(upcast(b, b.matmul(q, transpose_last(b, k))), scale if scale is not None else 1.0 / math.sqrt(d))
    t, n = b.shape(q)[-2], b.shape(k)[-2]
    dev = b.type_of(q).device
    if is_causal:   # row i sees columns j <= i (top-left aligned, like PyTorch)
        keep = b.ge(b.iota(shape=(t, n), axis=0, device=dev), b.iota(shape=(t, n), axis=1, device=dev))
        s = b.where(keep, s, -math.inf)
    if mask is not None:
        s = b.where(mask, s, -math.inf) if b.dtype(mask) == bool_ else b.add(s, upcast(b, mask))
    return s


@decomposition("scaled_dot_product_attention")
def _sdpa(b, q, k, v, mask=None, is_causal=False, scale=None):
    s = _scores(b, q, k, mask, is_causal, scale)
    m = b.max(s, axes=(len(b.shape(s)) - 1,), keepdim=True)
    m = b.where(b.eq(m, -math.inf), 0.0, m)     # a fully masked row gives zeros, not NaN
    p = b.exp(b.sub(s, m))
    l = b.sum(p, axes=(len(b.shape(s)) - 1,), keepdim=True)
    o = b.matmul(b.cast_to(b.div(p, l), b.dtype(v)), v)
    lse = b.reshape_to(b.add(b.log(l), m), b.shape(s)[:-1])
    return o, lse


@decomposition("scaled_dot_product_attention_bwd")
def _sdpa_bwd(b, q, k, v, o, lse, do, mask=None, is_causal=False, scale=None):
    scale = scale if scale is not None else 1.0 / math.sqrt(b.shape(q)[-1])
    s = _scores(b, q, k, mask, is_causal, scale)
    p = b.exp(b.sub(s, b.reshape_to(lse, b.shape(lse) + (1,))))
    dv = b.matmul(transpose_last(b, b.cast_to(p, b.dtype(v))), do)
    dp = upcast(b, b.matmul(do, transpose_last(b, v)))
    delta = b.sum(b.mul(upcast(b, do), upcast(b, o)), axes=(len(b.shape(o)) - 1,), keepdim=True)
    ds = b.cast_to(b.mul(b.mul(p, b.sub(dp, delta)), scale), b.dtype(q))
    dq = b.matmul(ds, k)
    dk = b.matmul(transpose_last(b, ds), q)
    return dq, dk, dv


@vjp("scaled_dot_product_attention")
def _sdpa_vjp(b, n, gs):
    q, k, v = n.inputs[:3]
    o, lse = n.outputs
    mask = list(n.inputs[3:])
    do, glse = gs
    if do is not None:
        dq, dk, dv = b.scaled_dot_product_attention_bwd(q, k, v, o, lse, do, *mask, **n.attrs)
    else:
        dq = dk = dv = None
    if glse is not None:
        # NOTE: dL/dS = P, so a cotangent of the logsumexp (grad of grad through the backward,
        # which reads it) adds P * glse to dS
        ds = _ds_lse(b, q, k, mask, lse, glse, n.attrs)
        scale = _scale(b, q, n.attrs)
        dsq = b.cast_to(b.mul(ds, scale), b.dtype(q))
        dq = _plus(b, dq, b.matmul(dsq, k))
        dk = _plus(b, dk, b.matmul(transpose_last(b, dsq), q))
    dmask = ()
    if mask:
        dmask = (None,)
        if b.dtype(mask[0]).is_floating:   # an additive float mask is learnable: d mask = dS
            dmask = (lambda: b.cast_to(_ds(b, q, k, v, o, lse, do, glse, mask, n.attrs), b.dtype(mask[0])),)
    return (dq, dk, dv) + dmask


def _plus(b, a, c):
    return c if a is None else b.add(a, c)


def _scale(b, q, attrs):
    return attrs["scale"] if attrs["scale"] is not None else 1.0 / math.sqrt(b.shape(q)[-1])


def _probs(b, q, k, mask, lse, attrs):
    s = _scores(b, q, k, mask[0] if mask else None, attrs["is_causal"], attrs["scale"])
    return b.exp(b.sub(s, b.reshape_to(lse, b.shape(lse) + (1,))))


def _ds_lse(b, q, k, mask, lse, glse, attrs):
    return b.mul(_probs(b, q, k, mask, lse, attrs), b.reshape_to(glse, b.shape(glse) + (1,)))


def _ds(b, q, k, v, o, lse, do, glse, mask, attrs):
    """dL/dS (S the masked, scaled scores) = P (dP - D) + P glse."""
    p = _probs(b, q, k, mask, lse, attrs)
    acc = None
    if do is not None:
        dp = upcast(b, b.matmul(do, transpose_last(b, v)))
        delta = b.sum(b.mul(upcast(b, do), upcast(b, o)), axes=(len(b.shape(o)) - 1,), keepdim=True)
        acc = b.sub(dp, delta)
    if glse is not None:
        acc = _plus(b, acc, b.reshape_to(glse, b.shape(glse) + (1,)))
    return b.mul(p, acc)
