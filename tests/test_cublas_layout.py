"""How `runtime.cublas` hands row-major operands to column-major cuBLAS without copies (CPU: the
layout logic only; the products themselves are checked on the GPU in tests/test_gpu.py)."""
from __future__ import annotations

import numpy as np

from tracegrad.runtime import cublas


def _read(x, op, ld):
    """The row-major matrix cuBLAS sees when it reads x's buffer as column-major with (op, ld)."""
    r, c = x.shape
    flat = x.ravel(order="K")      # the buffer in memory order
    if op == cublas.OP_N:       # column-major [c, r] with leading dimension ld is x^T: element (j, i) at j + i*ld
        return np.array([[flat[j + i * ld] for j in range(c)] for i in range(r)])
    return np.array([[flat[i + j * ld] for j in range(c)] for i in range(r)])    # op T of column-major [r, c]


def test_row_major_and_transposed_views_need_no_copy():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    op, ld = cublas._layout(a)
    assert (op, ld) == (cublas.OP_N, 4)
    np.testing.assert_array_equal(_read(a, op, ld), a)
    t = np.arange(12, dtype=np.float32).reshape(4, 3).T       # w.T: strides (1, 3) in elements
    op, ld = cublas._layout(t)
    assert (op, ld) == (cublas.OP_T, 3)
    np.testing.assert_array_equal(_read(t, op, ld), t)


def test_strided_in_both_axes_is_copied_and_types_are_checked():
    x = np.arange(64, dtype=np.float32).reshape(8, 8)[::2, ::2]
    assert cublas._layout(x) is None
    y = cublas._contiguous_matrix(x)
    assert y.flags.c_contiguous and np.array_equal(y, x)
    f32 = np.zeros((4, 4), np.float32)
    assert cublas.supports(f32, f32)
    assert not cublas.supports(f32, np.zeros((4, 4), np.float64))        # no float64 gemmEx here
    assert not cublas.supports(np.zeros((2, 4, 4), np.float32), np.zeros((3, 4, 4), np.float32))
