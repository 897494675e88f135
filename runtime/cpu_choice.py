"""Which engine a fused CPU kernel runs, its loops or its numpy ops: measured once, kept on disk.

A kernel's two engines agree to rounding, not bit for bit (numpy sums pairwise and has its own
transcendentals), and either can be the faster (numpy's SIMD `exp` beats a scalar loop where little
memory moves). The choice is made at the kernel's first call, on that call's inputs: each engine
runs `TIMED_RUNS` times, alternating, and the better best time wins (the best of several: one early
timing, taken while the process still faulted in its memory, once kept three layers' GELU kernels on
numpy at twice the loops' time). It is written to `<cache>/cpu/choice/<key>` (the key: the
kernel's sources, its input shapes and dtypes, the thread count), so every later call and every
later process on the machine runs the same engine from its first call: a run, and a run resumed
from its checkpoint, compute the same bits. The first writer of a key wins and every process reads
the file back, so ranks that measured at once agree.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time

import numpy as np

TIMED_RUNS = 3      # runs of each engine at a kernel's first call

_KNOWN: dict[str, str] = {}


def key(sources: list[str], ins, threads: int) -> str:
    h = hashlib.sha1()
    for s in sources:
        h.update(s.encode())
    for x in ins:
        a = np.asarray(x)
        h.update(f"|{a.dtype.str}{a.shape}".encode())
    h.update(f"|threads={threads}".encode())
    return h.hexdigest()[:24]


def recorded(k: str, cache_dir: str) -> str | None:
    got = _KNOWN.get(k)
    if got is None:
        try:
            with open(os.path.join(cache_dir, "choice", k)) as f:
                got = f.read().strip()
        except OSError:
            return None
        if got not in ("loops", "numpy"):
            return None
        _KNOWN[k] = got
    return got


def record(k: str, engine: str, cache_dir: str) -> str:
    """Keep `engine` for key `k` unless another process got there first; returns the kept one."""
    d = os.path.join(cache_dir, "choice")
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f"{k}.", suffix=".tmp")     # NOTE: thread ranks share a pid
    with os.fdopen(fd, "w") as f:
        f.write(engine)
    try:
        os.link(tmp, os.path.join(d, k))     # NOTE: atomic, whole, and refused when the key exists
    except FileExistsError:
        return recorded(k, cache_dir) or engine
    finally:
        os.unlink(tmp)
    _KNOWN[k] = engine
    return engine


def measure(run_loops, run_numpy):
    """(engine, its outputs): both engines run TIMED_RUNS times, alternating; the better best time wins."""
    best, outs = {}, {}
    for _ in range(TIMED_RUNS):
        for name, run in (("loops", run_loops), ("numpy", run_numpy)):
            t = time.perf_counter()
            outs[name] = run()
            dt = time.perf_counter() - t
            best[name] = min(best.get(name, dt), dt)
    engine = min(best, key=best.get)
    return engine, outs
