"""Reductions over outer axes (column sums such as a bias gradient, `sum(h, axes=(0, 1))` of a
[B, T, C] tensor) as Triton kernels under the interpreter, against the numpy backend: random
shapes, every set of reduced axes, keepdim, with and without fused elementwise producers and
consumers, bf16 and fp32; in one stage and split into two (chunks of rows, then the chunks), with
the column in registers and looped.

Repro: python -m pytest tests/test_triton_outer_reductions.py
"""
from __future__ import annotations

import math
import os
import re
import sys

import numpy as np
import pytest

triton = pytest.importorskip("triton")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from tracegrad.codegen import triton_codegen  # noqa: E402
from tracegrad.codegen.triton_program import TritonProgram  # noqa: E402
from tracegrad.ir import GraphBuilder, TensorType  # noqa: E402
from tracegrad.ir.passes import fusion_emit  # noqa: E402
from tracegrad.ir.passes.fusion import fuse  # noqa: E402
from tracegrad.ir.types import bfloat16, float32  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from triton_check import _cache_dir, assert_agree  # noqa: E402,F401  (_cache_dir: an autouse fixture)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _graph(shape, axes, keepdim, op, producer, consumer, dtype):
    b = GraphBuilder("cols")
    x = b.input("x", TensorType(shape, dtype))
    y = b.input("y", TensorType(shape[1:], dtype))        # broadcast over the leading axis
    h = b.mul(b.tanh(x), b.add(y, 1.0)) if producer else x
    s = getattr(b, op)(h, axes=axes, keepdim=keepdim)
    outs = [h, s] if producer else [s]
    if consumer:     # an epilogue on the reduced value, and a reader broadcasting it back
        e = b.exp(b.neg(b.abs(s)))
        outs.append(e)
        if keepdim:
            outs.append(b.sub(h, s))
    return b.finish(outs)


def _inputs(graph, rng):
    out = []
    for v in graph.inputs:
        a = rng.standard_normal(v.shape).astype(np.float32)
        out.append(a.astype(v.dtype.np) if v.dtype != float32 else a)
    return out


@st.composite
def cases(draw):
    rank = draw(st.integers(1, 4))
    shape = tuple(draw(st.sampled_from([1, 2, 3, 5, 8, 16, 24, 33])) for _ in range(rank))
    while math.prod(shape) > 3000:     # NOTE: the interpreter runs a lane at a time: keep it small
        shape = shape[1:]
    rank = len(shape)
    axes = tuple(a for a in range(rank) if draw(st.booleans())) or (0,)
    return dict(shape=shape, axes=axes, keepdim=draw(st.booleans()), op=draw(st.sampled_from(["sum", "sum", "max"])),
                producer=draw(st.booleans()), consumer=draw(st.booleans()),
                dtype=draw(st.sampled_from([float32, float32, bfloat16])))


@pytest.mark.parametrize("layout", ["split", "one-stage", "looped"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases(), seed=st.integers(0, 2**16))
def test_outer_reductions_match_numpy(layout, case, seed, monkeypatch):
    # NOTE: thresholds lowered so that these small shapes take each layout the big ones take
    monkeypatch.setitem(fusion_emit.COLUMN_SPLIT, "rows", 4)
    monkeypatch.setitem(fusion_emit.COLUMN_SPLIT, "on", layout != "one-stage")
    if layout == "looped":
        monkeypatch.setitem(triton_codegen.CONFIG, "persistent_max", 2)
        monkeypatch.setitem(triton_codegen.CONFIG, "loop_rblock", {"interpret": 2, "cuda": None})
    g = _graph(**case)
    bf16 = case["dtype"] == bfloat16
    # NOTE: a split changes the order of the sum; bf16 outputs may round the other way (1 ulp = 2^-8)
    assert_agree(g, _inputs(g, np.random.default_rng(seed)), rtol=1e-2 if bf16 else 1e-5, atol=2e-2 if bf16 else 1e-5)


def test_a_bias_gradient_splits_into_two_stages_over_the_contiguous_axis():
    g = _graph((16, 64, 48), (0, 1), False, "sum", True, False, bfloat16)     # [B, T, C] -> [C]
    fused = fuse(g)
    kernels = [n for n in fused.nodes if n.op == "kernel"]
    assert len(kernels) == 2, [n.attrs["name"] for n in kernels]
    # the first stage writes the elementwise result and fp32 partial sums of 64-row chunks
    first, second = (k.attrs["body"] for k in kernels)
    assert [v.type.shape for v in first.outputs] == [(16, 64, 48), (16, 48)]
    assert first.outputs[1].type.dtype == float32 and second.outputs[0].type.dtype == bfloat16
    gen = triton_codegen.generate(fused, "cuda")
    for ks in gen.kernels:
        assert ks.plan.outer and ks.persistent
        _, meta = triton_codegen.launch_config(ks, "cuda")
        assert meta["XBLOCK"] >= 32 and meta["XBLOCK"] * meta["RBLOCK"] <= 4096, meta
    assert_agree(g, _inputs(g, np.random.default_rng(0)), rtol=1e-2, atol=2e-2)


def test_long_columns_with_many_columns_loop_in_one_stage():
    b = GraphBuilder("wide")
    x = b.input("x", TensorType((600, 1 << 16), float32))
    fused = fuse(b.finish([b.sum(x, axes=(0,))]))
    (ks,) = triton_codegen.generate(fused, "cuda").kernels
    assert ks.plan.outer and not ks.persistent
    assert re.search(r"for roffset in range\(0, 600, RBLOCK\)", ks.source)
    _, meta = triton_codegen.launch_config(ks, "cuda")
    assert meta["XBLOCK"] == 128 and meta["RBLOCK"] == 16


def test_row_reductions_are_not_split():
    b = GraphBuilder("rows")
    x = b.input("x", TensorType((4096, 768), float32))
    fused = fuse(b.finish([b.sum(x, axes=(1,))]))
    assert sum(n.op == "kernel" for n in fused.nodes) == 1


def test_each_layers_bias_gradient_fuses_with_its_own_producer():
    """Two layers' GELU backward + bias gradient: each one kernel (elementwise result and partial sums),
    never the two layers' sums merged into one kernel that must recompute both producers."""
    from tracegrad.ir.graph import Provenance

    def layer(b, x, dy, k):
        h = b.mul(dy, b.tanh(x))
        return h, b.sum(h, axes=(0,))
    b = GraphBuilder("layers")
    x = b.input("x", TensorType((1024, 96), bfloat16))
    dy = b.input("dy", TensorType((1024, 96), bfloat16))
    h1, s1 = layer(b, x, dy, 1)
    m = b.matmul(h1, b.input("w", TensorType((96, 96), bfloat16)))      # the next layer depends on this one
    h2, s2 = layer(b, x, m, 2)
    g = b.finish([h2, s1, s2])
    nodes = list(g.nodes)
    for i, n in enumerate(nodes):     # the two layers are different modules, as a model's blocks are
        k = 1 if i < 3 else 2
        nodes[i] = n.with_(prov=Provenance("m.py", 1, "", "f", f"h.{k}"))
    g = g.__class__(g.name, g.inputs, tuple(nodes), g.outputs, g.meta)
    fused = fuse(g)
    names = [n.attrs["name"] for n in fused.nodes if n.op == "kernel"]
    assert len(names) == 4, names           # per layer: producer + first stage, then the second stage
    assert_agree(g, _inputs(g, np.random.default_rng(3)), rtol=1e-2, atol=5e-2)


@pytest.mark.parametrize("op", ["argmax", "max", "sum"])
def test_few_long_rows_split_into_parts_and_an_argmax_keeps_the_first_maximum(op, monkeypatch):
    """A sampler's argmax over [256, 151936] logits ran one program a row; cut into parts, the rows
    spread over the GPU. The argmax of the parts' maxima finds the part with the row's first
    maximum and its place there: ties across parts, NaN (numpy's argmax takes the first) and
    rows of -inf give numpy's answers. A fused producer stays in the first stage."""
    monkeypatch.setitem(fusion_emit.ROW_SPLIT, "rnumel", 256)
    monkeypatch.setitem(fusion_emit.ROW_SPLIT, "parts", (4,))        # parts of 256: 100 and 700 in two
    b = GraphBuilder("rows")
    x = b.input("x", TensorType((6, 1024), float32))
    s = b.input("s", TensorType((6, 1), float32))
    h = b.div(x, s)
    out = b.argmax(h, axis=1) if op == "argmax" else getattr(b, op)(h, axes=(1,))
    g = b.finish([out])
    kernels = [n for n in fuse(g).nodes if n.op == "kernel"]
    assert len(kernels) == 2, [n.attrs["name"] for n in kernels]
    assert "div" in {n.op for n in kernels[0].attrs["body"].nodes}
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 1024)).astype(np.float32)
    a[1, [100, 700]] = 9.0                     # a tie across two parts: the first wins
    a[2, 900], a[2, 300] = np.nan, np.nan      # NaN: the first one
    a[3] = -np.inf
    a[4, 1023] = 50.0                          # the last place of the last part
    assert_agree(g, [a, np.full((6, 1), 0.5, np.float32)], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("layout", ["persistent", "looped"])
def test_argmax_takes_the_first_nan_as_numpy_does(layout, monkeypatch):
    if layout == "looped":
        monkeypatch.setitem(triton_codegen.CONFIG, "persistent_max", 2)
        monkeypatch.setitem(triton_codegen.CONFIG, "loop_rblock", {"interpret": 4, "cuda": None})
    b = GraphBuilder("argmax")
    x = b.input("x", TensorType((4, 37), float32))
    g = b.finish([b.argmax(b.mul(x, 2.0), axis=1)])
    a = np.random.default_rng(2).normal(size=(4, 37)).astype(np.float32)
    a[0, [5, 30]] = np.nan
    a[1, 36] = np.nan
    a[2, [3, 9]] = 7.0
    assert_agree(g, [a])


@pytest.mark.parametrize("rows", [1, 256])
def test_a_split_argmax_over_a_large_vocabulary_compiles_for_sm90(rows):
    """The second stage reads the winning part's place with a gather whose index is a reduction
    result ([XBLOCK, 1], also when one row makes x a constant): its index check must compile."""
    pytest.importorskip("triton.backends.nvidia")
    from test_triton_codegen import compile_for_sm90
    b = GraphBuilder("sampler")
    x = b.input("x", TensorType((rows, 151936), float32))
    s = b.input("s", TensorType((rows, 1), float32))
    fused = fuse(b.finish([b.argmax(b.div(x, s), axis=1)]))
    assert sum(n.op == "kernel" for n in fused.nodes) == 2
    assert compile_for_sm90(fused) == 2
