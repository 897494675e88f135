"""A step called with a new shape every call: one warning per kind of reason, with the fix, and a
capped cache that falls back to eager or raises, as the user chooses."""
import warnings

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.compile import RecompileLimitError


def _calls(step, sizes):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = [step(tg.ones(n)) for n in sizes]
    return outs, [str(w.message) for w in caught]


def test_warns_once_per_reason_with_fix():
    step = tg.compile(lambda x: x + 1)
    _, msgs = _calls(step, range(1, 30))
    retrace = [m for m in msgs if "was traced" in m]
    assert len(retrace) == 1
    assert "x: f32[9] -> f32[10]" in retrace[0] or "->" in retrace[0]
    assert "drop_last" in retrace[0] and "bucketing" in retrace[0]


def test_cache_limit_falls_back_to_eager():
    step = tg.compile(lambda x: x * 2, cache_size_limit=4)
    outs, msgs = _calls(step, range(1, 10))
    assert len(step.entries) == 4
    assert [o.numpy().tolist() for o in outs] == [[2.0] * n for n in range(1, 10)]
    assert sum("cache_size_limit=4" in m and "eagerly" in m for m in msgs) == 1
    np.testing.assert_array_equal(step(tg.ones(2)).numpy(), [2.0, 2.0])      # cached entries still run


def test_cache_limit_error():
    step = tg.compile(lambda x: x * 2, cache_size_limit=2, on_cache_limit="error")
    step(tg.ones(1))
    step(tg.ones(2))
    with pytest.raises(RecompileLimitError, match="cache_size_limit=2.*drop_last"):
        step(tg.ones(3))
    with pytest.raises(ValueError, match="on_cache_limit"):
        tg.compile(lambda x: x, on_cache_limit="ignore")
