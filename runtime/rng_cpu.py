"""The counter-based draws of `rng` on the CPU as one parallel pass over the output.

`rng.uniform` and `rng.normal` written with numpy make a dozen full-size temporaries per draw;
initializing a 600M-parameter model that way takes over a minute. These loops compute the same
hash per element in registers, over all cores (from the main thread). Uniforms are bit-identical to the numpy
formula; normals agree to float32 rounding (the loop's log and cos are LLVM's, not numpy's).
Compiled on first use and cached on disk.
"""
from __future__ import annotations

import threading

import numba
import numpy as np

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


# NOTE: numba's parallel loops may not be entered from two threads at once under its fallback
# threading layer (the process aborts), so other threads (ranks of run_local) draw serially. Each
# variant is its own function: numba's disk cache tells functions apart by name, not by options.
@numba.njit(parallel=True, nogil=True, cache=True)
def _uniform_parallel(k, offset, out):
    for i in numba.prange(out.size):
        out[i] = _uniform_at(k, np.uint64(offset) + np.uint64(i))


@numba.njit(nogil=True, cache=True)
def _uniform_serial(k, offset, out):
    for i in range(out.size):
        out[i] = _uniform_at(k, np.uint64(offset) + np.uint64(i))


@numba.njit(parallel=True, nogil=True, cache=True)
def _normal_parallel(k1, k2, offset, out):
    for i in numba.prange(out.size):
        out[i] = _normal_at(k1, k2, np.uint64(offset) + np.uint64(i))


@numba.njit(nogil=True, cache=True)
def _normal_serial(k1, k2, offset, out):
    for i in range(out.size):
        out[i] = _normal_at(k1, k2, np.uint64(offset) + np.uint64(i))


PARALLEL_MIN = 1 << 16      # fewer samples than this: waking the thread pool costs more than it saves


def _parallel(n: int) -> bool:
    return n >= PARALLEL_MIN and threading.current_thread() is threading.main_thread()


def uniform(seed: int, offset: int, n: int) -> np.ndarray:
    out = np.empty(n, np.float32)
    (_uniform_parallel if _parallel(n) else _uniform_serial)(np.uint64(key(seed, 0)), np.uint64(offset), out)
    return out


def normal(seed: int, offset: int, n: int) -> np.ndarray:
    out = np.empty(n, np.float32)
    (_normal_parallel if _parallel(n) else _normal_serial)(np.uint64(key(seed, 1)), np.uint64(key(seed, 2)),
                                                                np.uint64(offset), out)
    return out

