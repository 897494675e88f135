"""Composite neural-network ops: activations, softmax, norms, linear, embedding, dropout, losses.

Each composite has a shape rule and a decomposition into primitives. Softmax, log_softmax and
the norms also carry a hand-written VJP (one fused-friendly formula instead of the autodiff of
their decomposition). Half-precision inputs are computed in fp32 and rounded once at the end,
as PyTorch does.
"""
from __future__ import annotations

import math

from ..types import bfloat16, float16, float32, float64
from .registry import decomposition, defop, fail, vjp


def upcast(b, x):
    return b.cast_to(x, float32) if b.dtype(x) in (float16, bfloat16) else x


def acc_dtype(d):
    """The dtype statistics are kept in: fp32, or fp64 for fp64 inputs."""
    return d if d == float64 else float32


def _float_infer(op):
    def infer(ts, **attrs):
        if not ts[0].dtype.is_floating:
            fail(op, ts, f"needs a floating-point input, got {ts[0].dtype.name}")
        return ts[0]
    return infer


def _axis_attr(b, x, axis):
    return axis % len(b.shape(x))


# -- activations (no VJP of their own: autodiff goes through the decomposition) ---------------
defop("gelu", "composite", _float_infer("gelu"), 1, dict(approximate="none"))
defop("silu", "composite", _float_infer("silu"), 1)
defop("relu", "composite", lambda ts: ts[0], 1)


@decomposition("gelu")
def _gelu(b, x, approximate):
    if approximate == "tanh":   # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        inner = b.mul(math.sqrt(2.0 / math.pi), b.add(x, b.mul(0.044715, b.mul(x, b.mul(x, x)))))
        return b.mul(b.mul(0.5, x), b.add(1.0, b.tanh(inner)))
    return b.mul(b.mul(0.5, x), b.add(1.0, b.erf(b.mul(x, 1.0 / math.sqrt(2.0)))))


decomposition("silu")(lambda b, x: b.mul(x, b.sigmoid(x)))
decomposition("relu")(lambda b, x: b.where(b.gt(x, 0), x, 0))


# -- softmax ----------------------------------------------------------------------------------
defop("softmax", "composite", _float_infer("softmax"), 1, dict(axis=-1))
defop("log_softmax", "composite", _float_infer("log_softmax"), 1, dict(axis=-1))


def _empty_axis(b, x, axis) -> bool:
    """softmax over a 0-size axis is an empty result (PyTorch), not a max over nothing."""
    return b.shape(x)[axis] == 0


def _shifted(b, x, axis):
    x = upcast(b, x)
    return b.sub(x, b.max(x, axes=(axis,), keepdim=True))


@decomposition("softmax")
def _softmax(b, x, axis):
    axis = _axis_attr(b, x, axis)
    if _empty_axis(b, x, axis):
        return b.add(x, 0.0)
    e = b.exp(_shifted(b, x, axis))
    return b.cast_to(b.div(e, b.sum(e, axes=(axis,), keepdim=True)), b.dtype(x))


@decomposition("log_softmax")
def _log_softmax(b, x, axis):
    axis = _axis_attr(b, x, axis)
    if _empty_axis(b, x, axis):
        return b.add(x, 0.0)
    z = _shifted(b, x, axis)
    return b.cast_to(b.sub(z, b.log(b.sum(b.exp(z), axes=(axis,), keepdim=True))), b.dtype(x))


@vjp("softmax")
def _softmax_vjp(b, n, gs):   # dx = y (g - sum(g y))
    axis = _axis_attr(b, n.inputs[0], n.attrs["axis"])
    y, g = upcast(b, n.outputs[0]), upcast(b, gs[0])
    dx = b.mul(y, b.sub(g, b.sum(b.mul(g, y), axes=(axis,), keepdim=True)))
    return b.cast_to(dx, b.dtype(n.inputs[0])),


@vjp("log_softmax")
def _log_softmax_vjp(b, n, gs):   # dx = g - exp(y) sum(g)
    axis = _axis_attr(b, n.inputs[0], n.attrs["axis"])
    y, g = upcast(b, n.outputs[0]), upcast(b, gs[0])
    dx = b.sub(g, b.mul(b.exp(y), b.sum(g, axes=(axis,), keepdim=True)))
    return b.cast_to(dx, b.dtype(n.inputs[0])),


# -- norms ------------------------------------------------------------------------------------
def _norm_infer(op, n_params):
    def infer(ts, **attrs):
        x, params = ts[0], ts[1:]
        if not x.dtype.is_floating:
            fail(op, ts, f"needs a floating-point input, got {x.dtype.name}")
        for p in params:
            if p.shape != x.shape[x.ndim - p.ndim:]:
                fail(op, ts, f"parameter shape {list(p.shape)} does not match the normalized shape "
                             f"{list(x.shape[x.ndim - p.ndim:])}")
        return x
    return infer


defop("layer_norm", "composite", _norm_infer("layer_norm", 2), 3, dict(eps=1e-5),
      doc="over the trailing axes that the weight covers")
defop("rms_norm", "composite", _norm_infer("rms_norm", 1), 2, dict(eps=1e-6))


def _param(b, w, like):
    """A norm's weight or bias in the dtype the statistics are computed in (PyTorch accepts an f64
    weight on f32 input and returns f32)."""
    return b.cast_to(w, b.dtype(like))


def _norm_axes(b, x, w):
    nd, k = len(b.shape(x)), len(b.shape(w))
    return tuple(range(nd - k, nd))


def _mean(b, x, axes):
    count = 1
    for a in axes:
        count *= b.shape(x)[a]
    return b.mul(b.sum(x, axes=axes, keepdim=True), 1.0 / count)


def _ln_stats(b, x, axes, eps):
    """(x - mean) and 1/sqrt(var + eps), in fp32."""
    xc = b.sub(x, _mean(b, x, axes))
    return xc, b.rsqrt(b.add(_mean(b, b.mul(xc, xc), axes), eps))


@decomposition("layer_norm")
def _layer_norm(b, x, w, bias, eps):
    axes = _norm_axes(b, x, w)
    xc, rstd = _ln_stats(b, upcast(b, x), axes, eps)
    y = b.add(b.mul(b.mul(xc, rstd), _param(b, w, xc)), _param(b, bias, xc))
    return b.cast_to(y, b.dtype(x))


@vjp("layer_norm")
def _layer_norm_vjp(b, n, gs):
    # dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)),  dxhat = g w
    x, w, bias = n.inputs
    axes = _norm_axes(b, x, w)
    xc, rstd = _ln_stats(b, upcast(b, x), axes, n.attrs["eps"])
    xhat, g = b.mul(xc, rstd), upcast(b, gs[0])
    dxhat = b.mul(g, _param(b, w, g))
    dx = b.mul(rstd, b.sub(b.sub(dxhat, _mean(b, dxhat, axes)), b.mul(xhat, _mean(b, b.mul(dxhat, xhat), axes))))
    return (b.cast_to(dx, b.dtype(x)),
            (lambda: b.cast_to(b.sum_to(b.mul(g, xhat), b.shape(w)), b.dtype(w))),
            (lambda: b.cast_to(b.sum_to(g, b.shape(bias)), b.dtype(bias))))


def _rms_rstd(b, x, axes, eps):
    return b.rsqrt(b.add(_mean(b, b.mul(x, x), axes), eps))


@decomposition("rms_norm")
def _rms_norm(b, x, w, eps):
    axes = _norm_axes(b, x, w)
    xf = upcast(b, x)
    return b.cast_to(b.mul(b.mul(xf, _rms_rstd(b, xf, axes, eps)), _param(b, w, xf)), b.dtype(x))


@vjp("rms_norm")
def _rms_norm_vjp(b, n, gs):
    # dx = rstd (dxhat - xhat mean(dxhat xhat)),  dxhat = g w
    x, w = n.inputs
    axes = _norm_axes(b, x, w)
    xf, g = upcast(b, x), upcast(b, gs[0])
    rstd = _rms_rstd(b, xf, axes, n.attrs["eps"])
    xhat = b.mul(xf, rstd)
    dxhat = b.mul(g, _param(b, w, g))
    dx = b.mul(rstd, b.sub(dxhat, b.mul(xhat, _mean(b, b.mul(dxhat, xhat), axes))))
    return b.cast_to(dx, b.dtype(x)), (lambda: b.cast_to(b.sum_to(b.mul(g, xhat), b.shape(w)), b.dtype(w)))


# -- linear, embedding, dropout, mse ----------------------------------------------------------
def _linear_infer(ts):
    x, w = ts[0], ts[1]
    if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != w.shape[1]:
        fail("linear", ts, f"input features {x.shape[-1:]} do not match weight {list(w.shape)} (out, in)")
    if len(ts) == 3 and ts[2].shape != (w.shape[0],):
        fail("linear", ts, f"bias must be [{w.shape[0]}]")
    if len({t.dtype for t in ts}) > 1:
        fail("linear", ts, "input, weight and bias need one dtype")
    return x.with_(shape=x.shape[:-1] + (w.shape[0],))


defop("linear", "composite", _linear_infer, None)


@decomposition("linear")
def _linear(b, x, w, bias=None):
    lead = b.shape(x)[:-1]
    flat = b.reshape_to(x, (math.prod(lead), b.shape(x)[-1]))   # one 2-d matmul, not a batch of them
    y = b.matmul(flat, b.permute(w, dims=(1, 0)))
    if bias is not None:
        y = b.add(y, bias)
    return b.reshape_to(y, lead + (b.shape(w)[0],))


def _embedding_infer(ts):
    w, idx = ts
    if w.ndim != 2 or not idx.dtype.is_integer:
        fail("embedding", ts, "takes a 2-d weight and integer indices")
    return w.with_(shape=idx.shape + (w.shape[1],))


defop("embedding", "composite", _embedding_infer, 2)
decomposition("embedding")(lambda b, w, idx: b.take(w, idx, axis=0))


def _dropout_infer(ts, p):
    x, state = ts
    if not 0.0 <= p < 1.0:
        fail("dropout", ts, f"p must be in [0, 1), got {p}")
    return [x, state]


defop("dropout", "composite", _dropout_infer, 2, dict(p=0.5), doc="(y, next RNG state)")


@decomposition("dropout")
def _dropout(b, x, state, p):
    u, state = b.rand_uniform(state, shape=b.shape(x), dtype=float32)
    return b.where(b.ge(u, p), b.mul(x, 1.0 / (1.0 - p)), 0.0), state


def _mse_infer(ts, reduction):
    a, c = ts
    if a.shape != c.shape or a.dtype != c.dtype:
        fail("mse_loss", ts, "input and target must have one shape and dtype")
    return a if reduction == "none" else a.with_(shape=())


defop("mse_loss", "composite", _mse_infer, 2, dict(reduction="mean"))


@decomposition("mse_loss")
def _mse(b, x, y, reduction):
    d = b.sub(x, y)
    sq = b.mul(d, d)
    if reduction == "none":
        return sq
    total = b.sum(sq, axes=tuple(range(len(b.shape(sq)))))
    return b.mul(total, 1.0 / max(1, math.prod(b.shape(sq)))) if reduction == "mean" else total
