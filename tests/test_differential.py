"""Differential testing of user programs (tests/difftest.py): random programs over the public API
run eagerly and compiled (numpy, and Triton under the interpreter), gradients taken inside and
outside the step, all compared with PyTorch in float64. A CI-sized run here; a larger one behind
`slow` (`python -m pytest tests/test_differential.py --runslow`).

Repro: a failure prints the program as Python and its seed; Hypothesis prints `@reproduce_failure`.
"""
from __future__ import annotations

import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

sys.path.insert(0, os.path.dirname(__file__))
from difftest import TEMPLATES, Case, Step, compare, shapes_after  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")

NAMES = sorted(TEMPLATES)


@st.composite
def cases(draw, max_steps=6):
    rows, cols = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    n_in = draw(st.integers(1, 3))
    inputs = [(rows, cols)] * n_in
    program: list[Step] = []
    shapes = list(inputs)
    for _ in range(draw(st.integers(1, max_steps))):
        name = draw(st.sampled_from(NAMES))
        arity, applies, _ = TEMPLATES[name]
        args = tuple(draw(st.integers(0, len(shapes) - 1)) for _ in range(arity))
        if not applies(*[shapes[i] for i in args]):
            continue
        program.append(Step(name, args))
        shapes = shapes_after(inputs, program)
    if not program:
        program.append(Step("tanh", (0,)))
    return Case(inputs, program, draw(st.integers(0, 2 ** 16)))


MODES = [("eager", None), ("inside", "numpy"), ("outside", "numpy")]
TRITON_MODES = [("inside", "triton"), ("outside", "triton")]
_CI = settings(max_examples=12, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_SLOW = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("mode, backend", MODES)
@_CI
@given(case=cases())
def test_programs_agree_with_pytorch(mode, backend, case):
    compare(case, mode, backend)


@pytest.mark.parametrize("mode, backend", TRITON_MODES)
@settings(_CI, max_examples=4)
@given(case=cases(max_steps=4))
def test_programs_agree_with_pytorch_on_triton(mode, backend, case):
    compare(case, mode, backend)


@pytest.mark.slow
@pytest.mark.parametrize("mode, backend", MODES + TRITON_MODES)
@_SLOW
@given(case=cases(max_steps=10))
def test_many_programs_agree_with_pytorch(mode, backend, case):
    compare(case, mode, backend)


def test_every_template_runs_eagerly_like_pytorch():
    """Each template once, on its own: a broken template fails here by name, not in a random program."""
    for name, (arity, applies, _) in sorted(TEMPLATES.items()):
        shapes = next(c[:arity] for c in ([(3, 4), (3, 4)], [(3, 4), (4, 3)], [(3, 4), (3, 3)]) if applies(*c[:arity]))
        compare(Case(list(shapes), [Step(name, tuple(range(arity)))], seed=7), "eager", None)
