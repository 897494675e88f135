"""The registry is complete: every op has a shape rule, a VJP (or a non-differentiable mark, or a
decomposition autodiff can go through), and a numpy lowering (composites: a decomposition whose
result types match the composite's shape rule)."""
from __future__ import annotations

import numpy as np
import pytest

from tracegrad.codegen import numpy_backend
from tracegrad.ir.ops import COMPOSITES, OPS, PRIMITIVES
from op_table import CASES, FORWARD_ONLY


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_has_all_facets(name):
    op = OPS[name]
    assert callable(op.infer), f"{name} has no shape rule"
    assert op.vjp is not None or op.nondiff or (op.is_composite and op.decompose), \
        f"{name} has no VJP rule, no non-differentiable mark and no decomposition"
    if op.is_composite:
        assert op.decompose is not None, f"composite {name} has no decomposition"
    else:
        assert name in numpy_backend.LOWER, f"primitive {name} has no numpy lowering"


def test_primitives_are_few():
    assert len(PRIMITIVES) <= 60 and len(COMPOSITES) >= 15


def test_missing_lowerings_is_empty():
    assert numpy_backend.missing_lowerings() == []


@pytest.mark.parametrize("case", [c for c in CASES + FORWARD_ONLY if OPS[c.op].is_composite], ids=lambda c: c.id)
def test_decomposition_types_match_shape_rule(case):
    from tracegrad.ir.builder import GraphBuilder
    from tracegrad.ir.types import TensorType, dtype
    arrays = case.make(np.random.default_rng(0))
    b = GraphBuilder("check")
    ins = [b.input(f"x{i}", TensorType(a.shape, dtype(a.dtype))) for i, a in enumerate(arrays)]
    attrs = OPS[case.op].normalize_attrs(case.attrs)
    want = OPS[case.op].infer_types([v.type for v in ins], attrs)
    got = OPS[case.op].decompose(b, *ins, **attrs)
    got = got if isinstance(got, tuple) else (got,)
    assert [v.type for v in got] == want
