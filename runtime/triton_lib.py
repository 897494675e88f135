"""The few `@triton.jit` helpers generated kernels call: numpy's semantics where Triton's differ
(floor division and modulo, NaN-propagating max), functions the interpreter lacks
(tanh, pow), and the counter-based RNG of `runtime/rng.py`, bit for bit.

Generated kernel modules do `from tracegrad.runtime.triton_lib import *`.
"""
from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["tl", "triton", "floordiv", "floormod", "tanh", "pow_", "mix32", "rng_key", "rng_uniform",
           "rng_normal", "nan_max"]


@triton.jit
def floordiv(a, b):
    """numpy's floor_divide on integers (Triton's `//` truncates toward zero)."""
    q = a // b
    return tl.where((a % b != 0) & ((a < 0) != (b < 0)), q - 1, q)


@triton.jit
def floormod(a, b):
    """numpy's mod: the result takes the divisor's sign (Triton's `%` takes the dividend's)."""
    r = a % b
    return tl.where((r != 0) & ((r < 0) != (b < 0)), r + b, r)


@triton.jit
def tanh(x):
    # Cephes tanhf: an odd polynomial near 0 (no cancellation), exp outside; fp32 to ~1 ulp
    ax = tl.abs(x)
    z = x * x
    p = (((-5.70498872745e-3 * z + 2.06390887954e-2) * z - 5.37397155531e-2) * z
         + 1.33314422036e-1) * z - 3.33332819422e-1
    small = x + x * z * p
    e = tl.exp(-2.0 * ax)
    big = (1.0 - e) / (1.0 + e)
    big = tl.where(x < 0, -big, big)
    return tl.where(ax < 0.625, small, big)


@triton.jit
def pow_(x, y):
    """numpy's power on floats: negative bases with integral exponents keep their sign."""
    ax = tl.abs(x)
    r = tl.exp(y * tl.log(ax))
    r = tl.where(y == 0, 1.0, r)
    yi = tl.floor(y)
    odd = (yi - 2.0 * tl.floor(yi * 0.5)) == 1.0
    neg = tl.where(odd, -r, r)
    r = tl.where(x < 0, tl.where(yi == y, neg, float("nan")), r)
    return r


@triton.jit
def nan_max(v, axis: tl.constexpr):
    """max over `axis` that returns NaN when any element is NaN (numpy's max)."""
    m = tl.max(v, axis)
    bad = tl.max((v != v).to(tl.int32), axis)
    return tl.where(bad > 0, float("nan"), m)


@triton.jit
def mix32(x):
    """lowbias32 (Wellons 2018) on uint32, as `runtime.rng.mix32`."""
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    return x ^ (x >> 16)


@triton.jit
def rng_key(seed, golden):
    """`runtime.rng.key(seed, stream)` for golden = GOLDEN * (stream + 1) mod 2**32."""
    lo = seed.to(tl.uint32)
    hi = (seed >> 32).to(tl.uint32)
    return mix32(lo ^ mix32(hi ^ golden))


@triton.jit
def rng_uniform(seed, ctr, golden):
    """U[0, 1) for counters `ctr` (int64): the top 24 bits of the keyed hash."""
    key = rng_key(seed, golden)
    lo = ctr.to(tl.uint32)
    hi = (ctr >> 32).to(tl.uint32)
    bits = mix32(mix32(lo ^ key) ^ hi)
    return (bits >> 8).to(tl.float32) * 5.9604644775390625e-08


@triton.jit
def rng_normal(seed, ctr, golden1, golden2):
    """N(0, 1) by Box-Muller over streams 1 and 2, as `runtime.rng.normal`."""
    u1 = rng_uniform(seed, ctr, golden1) + 5.9604644775390625e-08
    u2 = rng_uniform(seed, ctr, golden2)
    return tl.sqrt(-2.0 * tl.log(u1)) * tl.cos(6.2831854820251465 * u2)
