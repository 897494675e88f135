"""The numpy runtime's faster forms against numpy's own: `where` and `pad` bit for bit (they only
move bits, so NaNs, infinities and signed zeros come through unchanged), short reductions folded into
elementwise calls to float32 rounding."""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad.runtime.numpy_kernels import SELECT_MIN, pad, select


def _bits_equal(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    it = np.int32 if a.dtype.itemsize == 4 else np.int64
    np.testing.assert_array_equal(np.ascontiguousarray(a).view(it), np.ascontiguousarray(b).view(it))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_select_matches_where_bitwise(dtype):
    rng = np.random.default_rng(0)
    shape = (4, 8, 64, 64)     # above SELECT_MIN: the bit-arithmetic path
    assert np.prod(shape) >= SELECT_MIN
    a = rng.normal(size=shape).astype(dtype)
    a.reshape(-1)[:4] = [np.nan, np.inf, -np.inf, -0.0]
    b = rng.normal(size=shape).astype(dtype)
    cond = rng.random(shape) > 0.5
    _bits_equal(select(cond, a, b), np.where(cond, a, b))
    # broadcast operands: a scalar, a row mask, a transposed (strided) view
    zero, ninf = np.asarray(0.0, dtype), np.asarray(-np.inf, dtype)
    _bits_equal(select(cond, a, zero), np.where(cond, a, zero))
    row = np.tril(np.ones((64, 64), bool))
    _bits_equal(select(row, a, ninf), np.where(row, a, ninf))
    at = a.transpose(0, 1, 3, 2)
    _bits_equal(select(cond, at, b), np.where(cond, at, b))


def test_select_falls_back_to_where():
    rng = np.random.default_rng(1)
    cond = rng.random((300, 300)) > 0.5
    ints = rng.integers(0, 9, (300, 300))
    np.testing.assert_array_equal(select(cond, ints, np.asarray(0)), np.where(cond, ints, 0))
    small = rng.normal(size=(3, 4)).astype(np.float32)
    _bits_equal(select(cond[:3, :4], small, np.asarray(1.0, np.float32)),
                np.where(cond[:3, :4], small, np.float32(1.0)))
    mixed = select(cond, rng.normal(size=(300, 300)).astype(np.float32), np.asarray(0.0))   # f32 vs f64
    assert mixed.dtype == np.float64


@pytest.mark.parametrize("pads,value", [(((0, 0), (1, 1), (2, 0)), 0.0), (((1, 2), (0, 0), (0, 3)), -np.inf)])
def test_pad_matches_np_pad(pads, value):
    x = np.random.default_rng(2).normal(size=(3, 5, 7)).astype(np.float32)
    got = pad(x.transpose(0, 1, 2), pads, value)
    np.testing.assert_array_equal(got, np.pad(x, pads, constant_values=value))
    assert got.dtype == x.dtype and got.flags.writeable


@pytest.mark.parametrize("keepdim", [False, True])
def test_short_innermost_reductions_fold_into_elementwise_calls(keepdim):
    """A max-pool's window axes (2 x 2, one of them innermost) are reduced by one elementwise call
    per window position, not numpy's per-element reduction loop; the values stay the same."""
    x = np.random.default_rng(3).standard_normal((4, 8, 16, 2, 16, 2)).astype(np.float32)
    step = tg.compile(lambda t: (t.amax(dim=(3, 5), keepdim=keepdim), t.sum(dim=(3, 5), keepdim=keepdim)),
                      backend="numpy")
    mx, sm = step(tg.tensor(x))
    assert step.ir("kernels").count("fold_axes(") == 2
    np.testing.assert_array_equal(mx.numpy(), x.max(axis=(3, 5), keepdims=keepdim))
    # NOTE: four adds in order against numpy's pairwise sum: float32 rounding
    np.testing.assert_allclose(sm.numpy(), x.sum(axis=(3, 5), keepdims=keepdim), rtol=1e-5, atol=1e-6)
