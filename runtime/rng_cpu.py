"""The counter-based draws of `rng` on the CPU as one pass over the output.

`rng.uniform` and `rng.normal` written with numpy make a dozen full-size temporaries per draw;
initializing a 600M-parameter model that way takes over a minute. These loops compute the same
hash per element in registers, split over the threads `tg.set_num_threads` gives the fused CPU
kernels (`cpu_kernels.split_rows`). Uniforms are bit-identical to the numpy formula; normals agree
to float32 rounding (the loop's log and cos are LLVM's, not numpy's). Compiled on first use and
cached on disk.
"""
from __future__ import annotations

import numba
import numpy as np

from .cpu_kernels import split_rows
from .rng import M1, M2, MASK, key

# NOTE: every integer constant is uint64: numba turns uint64 mixed with int64 into float64
_M1, _M2, _MASK = np.uint64(M1), np.uint64(M2), np.uint64(MASK)
_S8, _S15, _S16, _S32 = np.uint64(8), np.uint64(15), np.uint64(16), np.uint64(32)
_SCALE = np.float32(2.0 ** -24)


@numba.njit(inline="always")
def _mix(x):
    # in uint64 with a mask after each multiply: numba widens uint32 products
    x ^= x >> _S16
    x = (x * _M1) & _MASK
    x ^= x >> _S15
    x = (x * _M2) & _MASK
    return x ^ (x >> _S16)


@numba.njit(inline="always")
def _uniform_at(k, c):
    h = _mix(_mix((c & _MASK) ^ k) ^ (c >> _S32))
    return np.float32(h >> _S8) * _SCALE


@numba.njit(inline="always")
def _normal_at(k1, k2, c):
    u1 = _uniform_at(k1, c) + _SCALE
    u2 = _uniform_at(k2, c)
    return np.sqrt(np.float32(-2.0) * np.log(u1)) * np.cos(np.float32(2 * np.pi) * u2)


@numba.njit(nogil=True, cache=True)
def _uniform(x0, x1, k, offset, out):
    for i in range(x0, x1):
        out[i] = _uniform_at(k, np.uint64(offset) + np.uint64(i))


@numba.njit(nogil=True, cache=True)
def _normal(x0, x1, k1, k2, offset, out):
    for i in range(x0, x1):
        out[i] = _normal_at(k1, k2, np.uint64(offset) + np.uint64(i))


def uniform(seed: int, offset: int, n: int) -> np.ndarray:
    out = np.empty(n, np.float32)
    split_rows(_uniform, n, n, np.uint64(key(seed, 0)), np.uint64(offset), out)
    return out


def normal(seed: int, offset: int, n: int) -> np.ndarray:
    out = np.empty(n, np.float32)
    split_rows(_normal, n, n, np.uint64(key(seed, 1)), np.uint64(key(seed, 2)), np.uint64(offset), out)
    return out
