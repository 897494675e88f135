"""One fused CPU kernel three ways, in one process on the same inputs: the demo's GELU forward
(bias add + tanh GELU over 16 x 64 x 512 fp32) as a numba loop calling libm's tanhf, as a numba
loop with the rational fp32 tanh the `cpu` backend writes, and as numpy ufuncs (the numpy backend).

    python benchmarks/cpu_kernels.py
"""
from __future__ import annotations

import statistics
import time

import numba
import numpy as np

from tracegrad.codegen.cpu_scalars import TANH32

_ns = {"np": np, "numba": numba}
exec(TANH32, _ns)
tanh32 = _ns["tanh32"]
C0, C1 = np.float32(0.7978845608028654), np.float32(0.044715)


@numba.njit(nogil=True)
def gelu_libm(a, b, o):
    for i in range(a.size):
        x = np.float32(a[i] + b[i % b.size])
        o[i] = np.float32(0.5) * x * (np.float32(1) + np.tanh(C0 * (x + C1 * x * x * x)))


@numba.njit(nogil=True)
def gelu_rational(a, b, o):
    for i in range(a.size):
        x = np.float32(a[i] + b[i % b.size])
        o[i] = np.float32(0.5) * x * (np.float32(1) + tanh32(C0 * (x + C1 * x * x * x)))


def gelu_numpy(a, b, o):
    x = a.reshape(-1, b.size) + b
    return np.float32(0.5) * x * (np.float32(1) + np.tanh(C0 * (x + C1 * x * x * x)))


def main():
    rng = np.random.default_rng(0)
    a = rng.normal(size=16 * 64 * 512).astype(np.float32) * 3
    b = rng.normal(size=512).astype(np.float32)
    want = gelu_numpy(a, b, None).reshape(-1)
    times = {}
    for name, fn in (("numba loop, libm tanhf", gelu_libm), ("numba loop, rational tanh", gelu_rational),
                     ("numpy ufuncs", gelu_numpy)):
        o = np.empty_like(a)
        fn(a, b, o)    # compile
        if fn is not gelu_numpy:
            np.testing.assert_allclose(o, want, rtol=1e-5, atol=1e-6)
        times[name] = []
    for _ in range(7):     # NOTE: interleaved, so a noisy neighbour slows all three alike
        for name, fn in (("numba loop, libm tanhf", gelu_libm), ("numba loop, rational tanh", gelu_rational),
                         ("numpy ufuncs", gelu_numpy)):
            t = time.perf_counter()
            fn(a, b, o)
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["numpy ufuncs"])
    print(f"{'GELU forward 16x64x512 fp32':<30} {'ms':>8} {'numpy / this':>13}")
    for name, ts in times.items():
        ms = statistics.median(ts)
        print(f"{name:<30} {ms * 1e3:8.2f} {base / ms:12.2f}x")


if __name__ == "__main__":
    main()
