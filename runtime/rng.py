"""Counter-based random numbers: sample i of a draw is a pure function of (seed, offset + i).

Eager ops, the numpy program and Triton kernels all compute the same 32-bit hash, so a compiled
step draws exactly the numbers the eager step would. The hash is the `lowbias32` integer mixer
(Wellons 2018) applied to the counter keyed by the seed; uniforms take its top 24 bits, normals
come from two keyed streams through Box-Muller.
"""
from __future__ import annotations

import numpy as np

M1, M2 = 0x7FEB352D, 0x846CA68B
GOLDEN = 0x9E3779B9
MASK = 0xFFFFFFFF


def mix32(x, xp=np):
    """lowbias32 on uint32 arrays (wrapping multiplies)."""
    x = x ^ (x >> xp.uint32(16))
    x = x * xp.uint32(M1)
    x = x ^ (x >> xp.uint32(15))
    x = x * xp.uint32(M2)
    return x ^ (x >> xp.uint32(16))


def mix32_int(x: int) -> int:
    """lowbias32 on a Python int, for keys computed on the host."""
    x &= MASK
    x ^= x >> 16
    x = (x * M1) & MASK
    x ^= x >> 15
    x = (x * M2) & MASK
    return x ^ (x >> 16)


def key(seed: int, stream: int) -> int:
    """The 32-bit key of one (seed, stream): kernels take it as a scalar argument."""
    return mix32_int((seed & MASK) ^ mix32_int(((seed >> 32) & MASK) ^ ((GOLDEN * (stream + 1)) & MASK)))


def bits(seed: int, offset: int, n: int, stream: int = 0, xp=np):
    """n uint32 words for counters offset .. offset+n-1."""
    ctr = xp.arange(n, dtype=xp.uint64) + xp.uint64(offset)
    lo = (ctr & xp.uint64(0xFFFFFFFF)).astype(xp.uint32)
    hi = (ctr >> xp.uint64(32)).astype(xp.uint32)
    return mix32(mix32(lo ^ xp.uint32(key(seed, stream)), xp) ^ hi, xp)


def uniform(seed: int, offset: int, n: int, stream: int = 0, xp=np):
    """U[0, 1) in float32: the top 24 bits of the hash times 2^-24."""
    return (bits(seed, offset, n, stream, xp) >> xp.uint32(8)).astype(xp.float32) * xp.float32(2.0 ** -24)


def normal(seed: int, offset: int, n: int, xp=np):
    """N(0, 1) by Box-Muller over two independent streams."""
    u1 = uniform(seed, offset, n, 1, xp) + xp.float32(2.0 ** -24)      # (0, 1]: log is finite
    u2 = uniform(seed, offset, n, 2, xp)
    return xp.sqrt(xp.float32(-2.0) * xp.log(u1)) * xp.cos(xp.float32(2 * np.pi) * u2)


def draw(kind: str, state, shape, dtype, xp=np):
    """(samples, next state) for a state array [seed, offset]; what the random ops compute."""
    seed, offset = (int(v) for v in state.tolist())
    n = int(np.prod(shape, dtype=np.int64))
    if xp is np:
        from . import rng_cpu
        sample = (rng_cpu.uniform if kind == "uniform" else rng_cpu.normal)(seed, offset, n)
    else:
        sample = (uniform(seed, offset, n, 0, xp) if kind == "uniform" else normal(seed, offset, n, xp))
    nxt = xp.asarray([seed, offset + n], dtype=xp.int64)
    return sample.reshape(shape).astype(dtype, copy=False), nxt
