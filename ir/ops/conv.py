"""2-d convolution and pooling (NCHW) as composites.

All three decompose the same way: pad, take one strided slice per kernel tap, stack the taps,
then contract (a matmul for conv2d, max or mean for pooling). Autodiff of slices gives the
backward; no im2col index tables are baked into the graph. Pooling whose windows tile the input
(kernel == stride, no padding: the common 2x2 max-pool) is a reshape and a reduction instead.
"""
from __future__ import annotations

import math

from ..types import TensorType
from .registry import decomposition, defop, fail

ATTRS = dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1))


def out_size(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _conv_infer(ts, stride, padding, dilation):
    x, w = ts[0], ts[1]
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1]:
        fail("conv2d", ts, "expected input [N, C, H, W] and weight [O, C, kh, kw] (groups=1)")
    if len(ts) == 3 and ts[2].shape != (w.shape[0],):
        fail("conv2d", ts, f"bias must be [{w.shape[0]}]")
    ho, wo = (out_size(x.shape[2 + i], w.shape[2 + i], stride[i], padding[i], dilation[i]) for i in range(2))
    if ho < 1 or wo < 1:
        fail("conv2d", ts, "the kernel is larger than the padded input")
    return TensorType((x.shape[0], w.shape[0], ho, wo), x.dtype, x.device)


defop("conv2d", "composite", _conv_infer, None, ATTRS)


def _tap_list(b, x, kernel, stride, padding, dilation, fill):
    """([the input under each kernel tap, [N, C, Ho, Wo]], (Ho, Wo))."""
    n, c, h, w = b.shape(x)
    if any(padding):
        x = b.pad(x, pads=((0, 0), (0, 0), (padding[0], padding[0]), (padding[1], padding[1])), value=fill)
    ho, wo = (out_size((h, w)[i], kernel[i], stride[i], padding[i], dilation[i]) for i in range(2))
    taps = []
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            r0, c0 = i * dilation[0], j * dilation[1]
            t = b.slice(x, starts=(0, 0, r0, c0), stops=(n, c, r0 + stride[0] * (ho - 1) + 1, c0 + stride[1] * (wo - 1) + 1),
                        steps=(1, 1, stride[0], stride[1]))
            taps.append(b.reshape_to(t, (n, c, ho, wo)))
    return taps, (ho, wo)


def _taps(b, x, kernel, stride, padding, dilation, fill):
    """[N, C, kh*kw, Ho, Wo]: the input under each kernel tap."""
    taps, (ho, wo) = _tap_list(b, x, kernel, stride, padding, dilation, fill)
    n, c = b.shape(x)[:2]
    taps = [b.reshape_to(t, (n, c, 1, ho, wo)) for t in taps]
    return (b.concat(*taps, axis=2) if len(taps) > 1 else taps[0]), (ho, wo)


@decomposition("conv2d")
def _conv2d(b, x, w, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    o, c, kh, kw = b.shape(w)
    n = b.shape(x)[0]
    taps, (ho, wo) = _taps(b, x, (kh, kw), stride, padding, dilation, 0.0)
    cols = b.reshape_to(taps, (n, c * kh * kw, ho * wo))
    y = b.matmul(b.reshape_to(w, (1, o, c * kh * kw)), cols)      # [N, O, Ho*Wo]
    if bias is not None:
        y = b.add(y, b.reshape_to(bias, (1, o, 1)))
    return b.reshape_to(y, (n, o, ho, wo))


def _pool_infer(op):
    def infer(ts, kernel, stride, padding):
        x = ts[0]
        if x.ndim != 4:
            fail(op, ts, "expected input [N, C, H, W]")
        if any(p * 2 > k for p, k in zip(padding, kernel)):
            fail(op, ts, "padding must be at most half the kernel size")
        ho, wo = (out_size(x.shape[2 + i], kernel[i], stride[i], padding[i], 1) for i in range(2))
        return x.with_(shape=x.shape[:2] + (ho, wo))
    return infer


POOL = dict(kernel=(2, 2), stride=(2, 2), padding=(0, 0))
defop("max_pool2d", "composite", _pool_infer("max_pool2d"), 1, POOL)
defop("avg_pool2d", "composite", _pool_infer("avg_pool2d"), 1, POOL, doc="count_include_pad=True")


def _tiles(b, x, kernel, stride, padding):
    """[N, C, Ho, kh, Wo, kw] when the windows tile the input (kernel == stride, no padding): a
    reshape, whose backward is a reshape too, instead of kh*kw strided taps and their scatter."""
    if tuple(kernel) != tuple(stride) or any(padding):
        return None
    n, c, h, w = b.shape(x)
    (kh, kw), ho, wo = kernel, h // kernel[0], w // kernel[1]
    if (ho * kh, wo * kw) != (h, w):      # the windows stop short of the last rows or columns
        x = b.slice(x, starts=(0, 0, 0, 0), stops=(n, c, ho * kh, wo * kw), steps=(1, 1, 1, 1))
    return b.reshape_to(x, (n, c, ho, kh, wo, kw))


def _first_max(b, taps):
    """The elementwise max of `taps` as a tree of selects: `where(a >= b or a is NaN, a, b)` keeps
    the earlier tap on a tie (a NaN wins, as max's), so the backward routes each window's gradient
    to its first maximum, as PyTorch's max_pool2d does, with one select per tap and no tie count."""
    while len(taps) > 1:
        pairs = [(taps[i], taps[i + 1]) for i in range(0, len(taps) - 1, 2)]
        taps = [b.where(b.logical_or(b.ge(a, c), b.isnan(a)), a, c) for a, c in pairs] + \
            (taps[-1:] if len(taps) % 2 else [])
    return taps[0]


@decomposition("max_pool2d")
def _max_pool(b, x, kernel, stride, padding):
    tiles = _tiles(b, x, kernel, stride, padding)
    if tiles is not None:
        n, c, ho, kh, wo, kw = b.shape(tiles)
        taps = [b.reshape_to(b.slice(tiles, starts=(0, 0, 0, i, 0, j), stops=(n, c, ho, i + 1, wo, j + 1),
                                     steps=(1,) * 6), (n, c, ho, wo)) for i in range(kh) for j in range(kw)]
        return _first_max(b, taps)
    return _first_max(b, _tap_list(b, x, kernel, stride, padding, (1, 1), -math.inf)[0])


@decomposition("avg_pool2d")
def _avg_pool(b, x, kernel, stride, padding):
    tiles = _tiles(b, x, kernel, stride, padding)
    total = b.sum(tiles, axes=(3, 5)) if tiles is not None else \
        b.sum(_taps(b, x, kernel, stride, padding, (1, 1), 0.0)[0], axes=(2,))
    return b.mul(total, 1.0 / (kernel[0] * kernel[1]))
