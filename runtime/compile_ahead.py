"""Compiling a step's Triton kernels before its first launch, all at once.

    with collecting() as launches:        # a dry run of the host function records its launches
        host(*arrays)
    precompile(launches + static, device_id)

Without this, each kernel compiles when it is first launched, one after another: the templates
(matmul, attention, cross-entropy) alone took 23 s of the GPT-2 step's first call. A dry run of the
host function finds every launch with its real arguments (the templates' strides and sizes too),
without launching anything: `launch` records instead (`triton_host.collected`) and the step's
`Externs` skip what would read a buffer's values (`Externs.dry`). `precompile` then compiles the
distinct kernels in worker processes (`compile_pool`) and loads them here from Triton's cache, in a
few threads, so the first launch of each finds it ready.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

from triton.runtime.jit import JITFunction

from . import compile_pool, triton_host
from .compile_worker import Pointer

log = logging.getLogger("tracegrad.compile")


@contextlib.contextmanager
def collecting():
    """Within: CUDA launches are recorded as (kernel, arguments, meta), not run."""
    outer = triton_host.collected
    launches = triton_host.collected = []
    try:
        yield launches
    finally:
        triton_host.collected = outer


def _spec(a):
    """What Triton specializes an argument on: a buffer's dtype and 16-byte alignment, an int's being
    1 or a multiple of 16 and its width; other values as they are."""
    if hasattr(a, "data_ptr"):
        p = Pointer.of(a)
        return ("ptr", p.dtype.name, p.aligned)
    if type(a) is int:
        return ("int", a == 1, a % 16 == 0, -2**31 <= a < 2**31)
    return (type(a).__name__, a)


def distinct(launches) -> list:
    """The launches of `launches` ((kernel, args, meta)) that compile differently, first seen first."""
    seen, out = set(), []
    for kernel, args, meta in launches:
        if not isinstance(kernel, JITFunction):      # autotuned: the autotuner compiles per config
            continue
        key = (kernel, tuple(map(_spec, args)), tuple(sorted(meta.items(), key=lambda kv: kv[0])))
        if key not in seen:
            seen.add(key)
            out.append((kernel, args, meta))
    return out


def expected_cost(kernel) -> int:
    """A kernel's compile time, in source characters: about linear in its length, for the generated
    kernels (58k characters of a foreach AdamW kernel: 5.7 s on the H200's host), and a matrix
    product's pipelining adds as much as 20k characters would (a matmul or attention template of a few
    thousand: 1.5-2.2 s)."""
    src = kernel.src
    called = [v for k, v in kernel.fn.__globals__.items() if isinstance(v, JITFunction) and f"{k}(" in src]
    src = "\n".join([src] + [f.src for f in called])
    return len(src) + (20_000 if "tl.dot" in src else 0)


def load_threads() -> int:
    """Threads compiling or loading at once in this process: `TRACEGRAD_COMPILE_THREADS`, else one per
    core up to 16."""
    return int(os.environ.get("TRACEGRAD_COMPILE_THREADS") or min(16, os.cpu_count() or 1))


def precompile(launches, device_id: int) -> dict:
    """Compile each distinct kernel of `launches` for CUDA device `device_id` before its launch: in
    the worker processes, then loaded here (what the workers could not take compiles here, in
    threads). A kernel that fails is left to compile at its launch, which reports the error.
    Returns {"kernels": how many are ready, "in_workers": how many the workers compiled, "names": the
    kernels' names, "workers_ms" and "load_ms": the time in the workers' part and in loading}."""
    try:
        triton_host.use_cupy_driver()
        import cupy
        cc = cupy.cuda.Device(device_id).compute_capability
    except Exception as e:         # NOTE: no usable driver here: the launches will say why
        log.debug("precompiling skipped: %s", e)
        return {"kernels": 0, "in_workers": 0, "names": [], "workers_ms": 0.0, "load_ms": 0.0}
    t0 = time.perf_counter()
    todo = distinct(launches)
    pool = compile_pool.get(int(cc))
    in_workers = 0
    if pool is not None:
        # NOTE: longest first, so the last to finish is a short one (the GPT-2 step's compiles run
        # from 0.1 s to 7 s)
        longest_first = sorted(todo, key=lambda launch: expected_cost(launch[0]), reverse=True)
        jobs = [j for j in (compile_pool.job_of(k, args, meta) for k, args, meta in longest_first) if j is not None]
        in_workers = pool.compile(jobs)
    t1 = time.perf_counter()

    def load(job) -> int:
        kernel, args, meta = job
        try:
            with cupy.cuda.Device(device_id):
                kernel.warmup(*[Pointer.of(a) if hasattr(a, "data_ptr") else a for a in args], grid=(1,), **meta)
            return 1
        except Exception as e:     # NOTE: never fatal: the launch compiles it again and reports
            log.debug("precompiling %s failed: %s", kernel, e)
            return 0
    threads = load_threads()
    with triton_host.torch_unseen():
        if threads <= 1 or len(todo) <= 1:
            loaded = sum(map(load, todo))
        else:
            with ThreadPoolExecutor(threads, thread_name_prefix="tracegrad-compile") as ex:
                loaded = sum(ex.map(load, todo))
    return {"kernels": loaded, "in_workers": in_workers, "names": sorted({k.fn.__name__ for k, _, _ in todo}),
            "workers_ms": (t1 - t0) * 1e3, "load_ms": (time.perf_counter() - t1) * 1e3}


def start_workers(device_id: int) -> None:
    """Start the compile workers for CUDA device `device_id` now, so they have imported Triton by the
    time the kernels are written; not when workers filled this cache before (the step's kernels are
    likely there, and starting workers would only slow the graph passes)."""
    if compile_pool.compiled_before():
        return
    try:
        import cupy
        compile_pool.start(int(cupy.cuda.Device(device_id).compute_capability))
    except Exception as e:
        log.debug("compile workers not started: %s", e)
