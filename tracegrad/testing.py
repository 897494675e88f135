"""`tg.testing.assert_close`: PyTorch's tensor comparison with its default tolerances per dtype.

    tg.testing.assert_close(actual, expected)                 # float32: rtol 1.3e-6, atol 1e-5
    tg.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
"""
from __future__ import annotations

import numpy as np

from .tensor import Tensor

# (rtol, atol) by dtype name, as torch.testing.assert_close's defaults
TOLERANCES = {"float16": (1e-3, 1e-5), "bfloat16": (1.6e-2, 1e-5), "float32": (1.3e-6, 1e-5),
              "float64": (1e-7, 1e-7)}


def _array(x):
    if isinstance(x, Tensor):
        a = x.numpy()
        return a.astype(np.float32) if x.dtype.name == "bfloat16" else a, x.dtype.name
    a = np.asarray(x)
    return a, str(a.dtype)


def assert_close(actual, expected, *, allow_subclasses: bool = True, rtol=None, atol=None, equal_nan: bool = False,
                 check_device: bool = True, check_dtype: bool = True, check_layout: bool = True,
                 check_stride: bool = False, msg=None) -> None:
    """Raise AssertionError unless |actual - expected| <= atol + rtol * |expected| everywhere."""
    if (rtol is None) != (atol is None):
        raise ValueError("assert_close: give both rtol and atol, or neither")
    if isinstance(actual, (list, tuple)) and isinstance(expected, (list, tuple)):
        if len(actual) != len(expected):
            raise AssertionError(f"sequences of different lengths: {len(actual)} and {len(expected)}")
        for a, e in zip(actual, expected):
            assert_close(a, e, rtol=rtol, atol=atol, equal_nan=equal_nan, check_dtype=check_dtype, msg=msg)
        return
    if isinstance(actual, dict) and isinstance(expected, dict):
        if set(actual) != set(expected):
            raise AssertionError(f"dicts with different keys: {sorted(actual)} and {sorted(expected)}")
        for k in actual:
            assert_close(actual[k], expected[k], rtol=rtol, atol=atol, equal_nan=equal_nan, check_dtype=check_dtype,
                         msg=msg)
        return
    a, da = _array(actual)
    e, de = _array(expected)
    if check_dtype and isinstance(actual, Tensor) and isinstance(expected, Tensor) and da != de:
        raise AssertionError(msg or f"The values for attribute 'dtype' do not match: {da} != {de}.")
    if a.shape != e.shape:
        raise AssertionError(msg or f"The values for attribute 'shape' do not match: {list(a.shape)} != {list(e.shape)}.")
    if rtol is None:
        rtol, atol = TOLERANCES.get(da, (0.0, 0.0))
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    ok = np.isclose(a64, e64, rtol=rtol, atol=atol, equal_nan=equal_nan) | (a64 == e64)
    if not ok.all():
        bad = int((~ok).sum())
        diff = np.abs(a64 - e64)
        diff[~np.isfinite(diff)] = np.inf
        i = np.unravel_index(int(np.argmax(np.where(ok, -1, diff))), a.shape) if a.shape else ()
        raise AssertionError(msg or (
            f"Tensor-likes are not close!\n\nMismatched elements: {bad} / {a.size} "
            f"({100.0 * bad / max(a.size, 1):.1f}%)\nGreatest absolute difference: {float(diff.max())} at index "
            f"{tuple(int(k) for k in i)} (up to {atol} allowed)\nrtol={rtol}, atol={atol}"))


assert_allclose = assert_close
