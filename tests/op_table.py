"""The op table that drives the op tests: for each op, sample inputs, attributes, which inputs are
differentiable, and a PyTorch reference (float64, CPU).

A sample is built from a numpy Generator so every run sees fresh but reproducible values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # the FD checks still run without the oracle
    torch = TF = None


@dataclass
class OpCase:
    op: str
    make: Callable[[np.random.Generator], list]   # -> input arrays (float64 where differentiable)
    attrs: dict = field(default_factory=dict)
    ref: Callable | None = None                    # (*torch tensors) -> torch tensor or tuple
    diff: tuple[int, ...] = (0,)                   # differentiable inputs
    outputs: tuple[int, ...] = (0,)                # outputs compared / differentiated
    name: str = ""
    fd: bool = True                                # check the VJP by finite differences (needs f64 output)

    @property
    def id(self) -> str:
        return self.name or self.op


def f(*shape, low=-2.0, high=2.0):
    return lambda r: r.uniform(low, high, shape)


def pos(*shape):
    return f(*shape, low=0.5, high=2.0)


def ints(high, *shape):
    return lambda r: r.integers(0, high, shape).astype(np.int64)


def inputs(*makers):
    return lambda r: [m(r) for m in makers]


def _unary(op, ref, make=None):
    return OpCase(op, inputs(make or f(3, 4)), ref=ref)


def _binary(op, ref, a=(3, 4), b=(4,), make=f):
    return OpCase(op, inputs(make(*a), make(*b)), ref=ref, diff=(0, 1))


def _pad_ref(x, pads=((1, 0), (2, 1)), value=0.5):
    flat = [p for lo_hi in reversed(pads) for p in lo_hi]
    return TF.pad(x, flat, value=value)


def _ce_ref(x, t, **kw):
    return TF.cross_entropy(x, t, **kw)


def _sdpa_ref(q, k, v, mask=None, is_causal=False):
    return TF.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)


def _mask(r):
    return r.uniform(size=(5, 6)) > 0.3


CASES: list[OpCase] = [
    _unary("neg", lambda x: -x),
    _unary("exp", torch.exp if torch else None),
    _unary("log", torch.log if torch else None, pos(3, 4)),
    _unary("sqrt", torch.sqrt if torch else None, pos(3, 4)),
    _unary("rsqrt", torch.rsqrt if torch else None, pos(3, 4)),
    _unary("tanh", torch.tanh if torch else None),
    _unary("sin", torch.sin if torch else None),
    _unary("cos", torch.cos if torch else None),
    _unary("abs", torch.abs if torch else None, lambda r: r.uniform(0.2, 2, (3, 4)) * r.choice([-1, 1], (3, 4))),
    _unary("erf", torch.erf if torch else None),
    _unary("sigmoid", torch.sigmoid if torch else None),
    _unary("reciprocal", torch.reciprocal if torch else None, pos(3, 4)),
    _binary("add", torch.add if torch else None),
    _binary("sub", torch.sub if torch else None, a=(2, 1, 4), b=(3, 4)),
    _binary("mul", torch.mul if torch else None),
    _binary("div", torch.div if torch else None, make=pos),
    _binary("pow", torch.pow if torch else None, make=pos),
    OpCase("maximum", inputs(f(3, 4), f(3, 4)), ref=torch.maximum if torch else None, diff=(0, 1)),
    OpCase("minimum", inputs(f(3, 4), f(4)), ref=torch.minimum if torch else None, diff=(0, 1)),
    OpCase("where", inputs(lambda r: r.uniform(size=(3, 4)) > 0.5, f(3, 4), f(4)),
           ref=lambda c, x, y: torch.where(c, x, y), diff=(1, 2)),
    OpCase("sum", inputs(f(3, 4, 5)), dict(axes=(0, 2), keepdim=False), ref=lambda x: x.sum((0, 2))),
    OpCase("sum", inputs(f(3, 4)), dict(axes=(1,), keepdim=True), ref=lambda x: x.sum(1, keepdim=True),
           name="sum_keepdim"),
    OpCase("max", inputs(f(3, 4, 5)), dict(axes=(1,), keepdim=False), ref=lambda x: x.amax(1)),
    OpCase("reshape", inputs(f(3, 4)), dict(shape=(2, 6)), ref=lambda x: x.reshape(2, 6)),
    OpCase("permute", inputs(f(2, 3, 4)), dict(dims=(2, 0, 1)), ref=lambda x: x.permute(2, 0, 1)),
    OpCase("expand", inputs(f(3, 1)), dict(shape=(2, 3, 4)), ref=lambda x: x.expand(2, 3, 4)),
    OpCase("slice", inputs(f(7, 6)), dict(starts=(1, 0), stops=(7, 5), steps=(2, 3)), ref=lambda x: x[1:7:2, 0:5:3]),
    OpCase("pad", inputs(f(3, 4)), dict(pads=((1, 0), (2, 1)), value=0.5), ref=_pad_ref),
    OpCase("concat", inputs(f(2, 3), f(4, 3)), dict(axis=0), ref=lambda a, b: torch.cat([a, b], 0), diff=(0, 1)),
    OpCase("take", inputs(f(5, 3), ints(5, 2, 4)), dict(axis=0), ref=lambda x, i: x[i]),
    OpCase("gather", inputs(f(4, 5), ints(5, 4, 2)), dict(axis=1), ref=lambda x, i: torch.gather(x, 1, i)),
    OpCase("index_add", inputs(f(5, 3), ints(5, 4), f(4, 3)), dict(axis=0),
           ref=lambda x, i, s: x.index_add(0, i, s), diff=(0, 2)),
    OpCase("scatter_add", inputs(f(4, 5), ints(5, 4, 3), f(4, 3)), dict(axis=1),
           ref=lambda x, i, s: x.scatter_add(1, i, s), diff=(0, 2)),
    OpCase("matmul", inputs(f(2, 1, 3, 4), f(5, 4, 2)), ref=torch.matmul if torch else None, diff=(0, 1)),
    OpCase("cast", inputs(f(3, 4)), dict(dtype="float32"), ref=lambda x: x.float(), fd=False),
    # composites
    OpCase("softmax", inputs(f(3, 5)), dict(axis=-1), ref=lambda x: torch.softmax(x, -1)),
    OpCase("log_softmax", inputs(f(3, 5)), dict(axis=0), ref=lambda x: torch.log_softmax(x, 0)),
    OpCase("layer_norm", inputs(f(2, 3, 6), f(6), f(6)), dict(eps=1e-5),
           ref=lambda x, w, b: TF.layer_norm(x, (6,), w, b, 1e-5), diff=(0, 1, 2)),
    OpCase("rms_norm", inputs(f(3, 6), f(6)), dict(eps=1e-6),
           ref=lambda x, w: TF.rms_norm(x, (6,), w, 1e-6), diff=(0, 1)),
    OpCase("gelu", inputs(f(3, 4)), ref=TF.gelu if TF else None),
    OpCase("gelu", inputs(f(3, 4)), dict(approximate="tanh"), ref=lambda x: TF.gelu(x, approximate="tanh"),
           name="gelu_tanh"),
    OpCase("silu", inputs(f(3, 4)), ref=TF.silu if TF else None),
    OpCase("relu", inputs(lambda r: r.uniform(0.1, 1, (3, 4)) * r.choice([-1, 1], (3, 4))), ref=torch.relu if torch else None),
    OpCase("linear", inputs(f(2, 3, 4), f(5, 4), f(5)), ref=TF.linear if TF else None, diff=(0, 1, 2)),
    OpCase("embedding", inputs(f(6, 3), ints(6, 2, 4)), ref=lambda w, i: TF.embedding(i, w)),
    OpCase("mse_loss", inputs(f(3, 4), f(3, 4)), dict(reduction="mean"), ref=TF.mse_loss if TF else None, diff=(0, 1)),
    OpCase("cross_entropy", inputs(f(6, 5), lambda r: np.array([0, 4, -100, 2, 1, -100])),
           dict(ignore_index=-100, label_smoothing=0.1, reduction="mean"),
           ref=lambda x, t: _ce_ref(x, t, ignore_index=-100, label_smoothing=0.1)),
    OpCase("cross_entropy", inputs(f(4, 7), ints(7, 4)), dict(reduction="sum"),
           ref=lambda x, t: _ce_ref(x, t, reduction="sum"), name="cross_entropy_sum"),
    OpCase("scaled_dot_product_attention", inputs(f(2, 2, 5, 4), f(2, 2, 5, 4), f(2, 2, 5, 3)),
           dict(is_causal=True), ref=lambda q, k, v: _sdpa_ref(q, k, v, is_causal=True), diff=(0, 1, 2),
           name="sdpa_causal"),
    OpCase("scaled_dot_product_attention", inputs(f(1, 2, 5, 4), f(1, 2, 6, 4), f(1, 2, 6, 4), _mask),
           ref=lambda q, k, v, m: _sdpa_ref(q, k, v, m), diff=(0, 1, 2), name="sdpa_mask"),
    OpCase("conv2d", inputs(f(2, 3, 6, 5), f(4, 3, 3, 2), f(4)), dict(stride=(2, 1), padding=(1, 1)),
           ref=lambda x, w, b: TF.conv2d(x, w, b, stride=(2, 1), padding=(1, 1)), diff=(0, 1, 2)),
    OpCase("max_pool2d", inputs(f(2, 3, 6, 6)), dict(kernel=(2, 2), stride=(2, 2)),
           ref=lambda x: TF.max_pool2d(x, 2, 2)),
    OpCase("avg_pool2d", inputs(f(2, 3, 5, 5)), dict(kernel=(3, 3), stride=(2, 2), padding=(1, 1)),
           ref=lambda x: TF.avg_pool2d(x, 3, 2, 1)),
    # windows that tile the input (a reshape), the last row and columns left out
    OpCase("max_pool2d", inputs(f(2, 3, 7, 8)), dict(kernel=(2, 3), stride=(2, 3)),
           ref=lambda x: TF.max_pool2d(x, (2, 3), (2, 3)), name="max_pool2d_tiles"),
    OpCase("avg_pool2d", inputs(f(2, 3, 6, 7)), dict(kernel=(2, 2), stride=(2, 2)),
           ref=lambda x: TF.avg_pool2d(x, 2, 2), name="avg_pool2d_tiles"),
]

# ops without gradients: checked for forward values (and their nondiff mark) only
FORWARD_ONLY: list[OpCase] = [
    OpCase("sign", inputs(f(3, 4)), ref=torch.sign if torch else None, diff=()),
    OpCase("floor", inputs(f(3, 4)), ref=torch.floor if torch else None, diff=()),
    OpCase("mod", inputs(f(3, 4), pos(4)), ref=torch.remainder if torch else None, diff=()),
    OpCase("eq", inputs(ints(3, 3, 4), ints(3, 4)), ref=torch.eq if torch else None, diff=()),
    OpCase("lt", inputs(f(3, 4), f(3, 4)), ref=torch.lt if torch else None, diff=()),
    OpCase("ge", inputs(f(3, 4), f(4)), ref=torch.ge if torch else None, diff=()),
    OpCase("argmax", inputs(f(3, 5)), dict(axis=1, keepdim=False), ref=lambda x: x.argmax(1), diff=()),
    OpCase("logical_and", inputs(lambda r: r.uniform(size=4) > .5, lambda r: r.uniform(size=4) > .5),
           ref=torch.logical_and if torch else None, diff=()),
]
