"""Hypothesis builds random graphs of elementwise, reduction and movement ops (shapes, broadcasts,
views, pads, concats, gathers); every one runs on the numpy backend and as Triton kernels under the
interpreter, and the results must agree (400 examples here, 1500 more with --runslow), with
persistent and with looped reductions.

Repro: python -m pytest tests/test_triton_random_graphs.py   (a failing example prints the graph it
built, and `@reproduce_failure` to paste).
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

triton = pytest.importorskip("triton")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from tracegrad.codegen import triton_codegen  # noqa: E402
from tracegrad.ir import GraphBuilder, TensorType  # noqa: E402
from tracegrad.ir.types import bfloat16, float32, int64  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from triton_check import _cache_dir, assert_agree  # noqa: E402,F401  (_cache_dir: an autouse fixture)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


# -- random graphs -------------------------------------------------------------------------------------
UNARY = ["neg", "tanh", "sigmoid", "sin", "cos", "abs", "erf", "exp_neg_abs", "sqrt_abs", "floor", "via_bf16"]
BINARY = ["add", "sub", "mul", "maximum", "minimum", "safe_div", "where_gt", "mod_pos"]


def _shape(draw, rank=None):
    rank = draw(st.sampled_from([0, 1, 2, 2, 3, 3])) if rank is None else rank
    return tuple(draw(st.integers(1, 6)) for _ in range(rank))


def _broadcastable(draw, shape):
    """A shape that numpy-broadcasts with `shape` (some axes 1, maybe fewer axes)."""
    lead = draw(st.integers(0, len(shape)))
    return tuple(1 if draw(st.booleans()) else n for n in shape[lead:])


class RandomGraph:
    def __init__(self, draw):
        self.draw = draw
        self.b = GraphBuilder("random")
        self.vals = []
        for i in range(draw(st.integers(1, 3))):
            shape = _shape(draw) if i == 0 else _broadcastable(draw, self.vals[0].shape)
            self.vals.append(self.b.input(f"x{i}", TensorType(shape, float32)))

    def pick(self):
        return self.draw(st.sampled_from(self.vals[-4:] if self.draw(st.booleans()) else self.vals))

    def unary(self, x):
        b, op = self.b, self.draw(st.sampled_from(UNARY))
        if op == "exp_neg_abs":
            return b.exp(b.neg(b.abs(x)))
        if op == "sqrt_abs":
            return b.sqrt(b.abs(x))
        if op == "via_bf16":     # bf16 math rounds once per op, in both backends
            return b.cast_to(b.mul(b.cast_to(x, bfloat16), b.cast_to(x, bfloat16)), float32)
        return getattr(b, op)(x)

    def binary(self, x, y):
        b, op = self.b, self.draw(st.sampled_from(BINARY))
        if op == "safe_div":
            return b.div(x, b.add(b.mul(y, y), 1.0))
        if op == "where_gt":
            return b.where(b.gt(x, y), x, y)
        if op == "mod_pos":
            return b.mod(x, b.add(b.abs(y), 0.5))
        return getattr(b, op)(x, y)

    def movement(self, x):
        b, d = self.b, self.draw
        shape = b.shape(x)
        kind = d(st.sampled_from(["reshape", "permute", "expand", "slice", "pad", "concat", "gather"]))
        if kind == "reshape" and shape:
            n = math.prod(shape)
            divs = [k for k in range(1, n + 1) if n % k == 0]
            a = d(st.sampled_from(divs))
            return b.reshape(x, shape=(a, n // a) if d(st.booleans()) else (n // a, 1, a))
        if kind == "permute" and len(shape) > 1:
            return b.permute(x, dims=tuple(d(st.permutations(range(len(shape))))))
        if kind == "expand":
            return b.expand(x, shape=(d(st.integers(1, 3)),) + shape)
        if kind == "slice" and shape:
            starts, stops, steps = [], [], []
            for n in shape:
                lo = d(st.integers(0, n - 1))
                starts.append(lo)
                stops.append(d(st.integers(lo + 1, n)))
                steps.append(d(st.integers(1, 2)))
            return b.slice(x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
        if kind == "pad" and shape:
            pads = tuple((d(st.integers(0, 2)), d(st.integers(0, 2))) for _ in shape)
            return b.pad(x, pads=pads, value=d(st.sampled_from([0.0, -1.5])))
        if kind == "concat" and shape:
            axis = d(st.integers(0, len(shape) - 1))
            y = self.unary(x)
            return b.concat(x, y, axis=axis)
        if kind == "gather" and shape:
            axis = d(st.integers(0, len(shape) - 1))
            k = b.cast_to(b.mod(b.floor(b.mul(b.abs(x), 7.0)), float(shape[axis])), int64)
            return b.gather(x, k, axis=axis)
        return self.unary(x)

    def reduction(self, x):
        b, d = self.b, self.draw
        shape = b.shape(x)
        if not shape:
            return b.tanh(x)
        axes = tuple(sorted(set(d(st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape))))))
        op = d(st.sampled_from(["sum", "max", "argmax", "softmax_like"]))
        keep = d(st.booleans())
        if op == "argmax":
            return b.cast_to(b.argmax(x, axis=axes[-1], keepdim=keep), float32)
        if op == "softmax_like":   # max, subtract, exp, sum, divide: one fused kernel
            m = b.max(x, axes=axes, keepdim=True)
            e = b.exp(b.sub(x, m))
            return b.div(e, b.sum(e, axes=axes, keepdim=True))
        return getattr(b, op)(x, axes=axes, keepdim=keep)

    def build(self):
        d = self.d = self.draw
        for _ in range(d(st.integers(2, 9))):
            kind = d(st.sampled_from(["unary", "binary", "binary", "movement", "movement", "reduction",
                                      "reduction"]))
            x = self.pick()
            if kind == "unary":
                v = self.unary(x)
            elif kind == "binary":
                y = self.pick()
                try:
                    np.broadcast_shapes(self.b.shape(x), self.b.shape(y))
                except ValueError:
                    y = self.unary(x)
                v = self.binary(x, y)
            elif kind == "movement":
                v = self.movement(x)
            else:
                v = self.reduction(x)
            self.vals.append(v)
        outs = [self.vals[-1]] + ([self.vals[-2]] if len(self.vals) > 2 and d(st.booleans()) else [])
        return self.b.finish(outs)


class Case(tuple):
    """(graph, input arrays), shown as the graph's text when Hypothesis reports a failure."""

    def __repr__(self):
        return f"\n{self[0]}\ninputs: {[a.shape for a in self[1]]}"


@st.composite
def random_graphs(draw):
    g = RandomGraph(draw).build()
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    arrays = [rng.uniform(-2, 2, v.shape).astype(np.float32) for v in g.inputs]
    return Case((g, arrays))


HYPOTHESIS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@settings(max_examples=300, **HYPOTHESIS)
@given(random_graphs())
def test_random_graphs_agree(case):
    assert_agree(*case)


@settings(max_examples=100, **HYPOTHESIS)
@given(random_graphs())
def test_random_graphs_agree_with_looped_reductions(case):
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(triton_codegen.CONFIG, "persistent_max", 2)
        mp.setitem(triton_codegen.CONFIG, "loop_rblock", {"interpret": 2, "cuda": None})
        assert_agree(*case)


@pytest.mark.slow
@settings(max_examples=1500, **{**HYPOTHESIS, "derandomize": False})
@given(random_graphs())
def test_random_graphs_agree_many(case):
    assert_agree(*case)
