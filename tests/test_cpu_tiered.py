"""How a step's CPU loops get compiled: in worker processes, into numba's cache, before the first
call by default, or tiered (numpy ops until the loops are ready)."""
from __future__ import annotations

import numpy as np
import pytest

import tracegrad as tg

pytest.importorskip("numba")


def test_auto_picks_the_loops_on_the_cpu_unless_told_otherwise(monkeypatch):
    """`tg.compile`'s default backend on CPU tensors is the fused loops; TRACEGRAD_CPU_BACKEND=numpy
    makes it numpy and =tiered the loops tiered; without numba it is numpy."""
    from tracegrad import pipeline
    step = tg.compile(lambda x: (x * 2).sum(), backend="numpy")
    step(tg.randn(4, 4))
    graph = step.graphs()["traced"]
    monkeypatch.delenv("TRACEGRAD_CPU_BACKEND", raising=False)
    assert pipeline.choose_backend("auto", graph) == "cpu"
    for env, want in (("numpy", "numpy"), ("tiered", "cpu:tiered"), ("cpu", "cpu")):
        monkeypatch.setenv("TRACEGRAD_CPU_BACKEND", env)
        assert pipeline.choose_backend("auto", graph) == want
    monkeypatch.setenv("TRACEGRAD_CPU_BACKEND", "fast")
    with pytest.raises(ValueError, match="TRACEGRAD_CPU_BACKEND='fast'"):
        pipeline.choose_backend("auto", graph)
    monkeypatch.delenv("TRACEGRAD_CPU_BACKEND")
    monkeypatch.setattr(pipeline, "_has_numba", lambda: False)
    assert pipeline.choose_backend("auto", graph) == "numpy"
    assert pipeline.choose_backend("cpu", graph) == "cpu" and pipeline.choose_backend("numpy", graph) == "numpy"


def test_graphs_traced_again_for_new_shapes_run_on_numpy(monkeypatch):
    """Under "auto", a function's first graph runs on the loops and the graphs it is traced again for
    (a sampling loop over a growing sequence) on numpy, which compiles nothing per shape; an explicit
    backend="cpu" keeps the loops for every shape. Every shape's values agree with eager."""
    from tracegrad.codegen.cpu_program import CpuProgram
    monkeypatch.delenv("TRACEGRAD_CPU_BACKEND", raising=False)
    x = tg.tensor(np.random.default_rng(11).normal(size=(4, 6)).astype(np.float32))

    def f(x):
        return (x.tanh() * 2.0).softmax(-1)
    auto, loops = tg.compile(f), tg.compile(f, backend="cpu")
    for n in (4, 3, 2):
        want = f(x[:n]).numpy()
        for step in (auto, loops):
            np.testing.assert_allclose(step(x[:n]).numpy(), want, rtol=1e-5, atol=1e-6)
    assert [isinstance(e.program, CpuProgram) for e in auto.entries] == [True, False, False]
    assert all(isinstance(e.program, CpuProgram) for e in loops.entries) and len(loops.entries) == 3


def test_worker_processes_compile_the_loops_and_this_process_loads_them(tmp_path, monkeypatch):
    """On an empty cache, the loops of a step compile in worker processes (into numba's cache beside
    each kernel's file) and the step's process loads them from that cache; a job a worker cannot do
    is compiled here, as without workers."""
    from tracegrad.runtime import compile_pool, cpu_kernels
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TRACEGRAD_COMPILE_WORKERS", "2")
    monkeypatch.setattr(cpu_kernels, "_LOADED", {})
    compile_pool.stop_all()
    compile_pool._POOLS.pop(0, None)
    built = []
    compile_all = cpu_kernels.compile_all
    monkeypatch.setattr(cpu_kernels, "compile_all", lambda ks, **kw: (built.extend(ks), compile_all(ks, **kw))[1])
    x = tg.tensor(np.random.default_rng(9).normal(size=(32, 40)).astype(np.float32))

    def f(x):
        return (x.tanh() * 3.0).softmax(-1), (x * x).sum(0).sqrt()
    want = [t.numpy() for t in tg.compile(f, backend="numpy")(x)]
    got = [t.numpy() for t in tg.compile(f, backend="cpu")(x)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6)
    kernels = {id(k.fn): k.fn for k, _ in built}
    assert len(kernels) >= 2
    assert compile_pool.get(0).stats["compiled"] == len(kernels)
    assert all(fn.stats.cache_hits for fn in kernels.values())     # loaded, not compiled, here
    compile_pool.stop_all()


def test_a_tiered_step_runs_numpy_ops_until_its_loops_are_compiled_and_then_the_loops(tmp_path, monkeypatch):
    """TRACEGRAD_CPU_BACKEND=tiered: the first call does not wait for numba (its kernels run as numpy
    ops while the loops compile in the background); once compiled, each kernel runs the engine chosen
    for it. Every call's results agree with the numpy backend."""
    import threading
    from tracegrad.runtime import cpu_kernels
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TRACEGRAD_CPU_BACKEND", "tiered")
    monkeypatch.setattr(cpu_kernels, "_LOADED", {})
    x = tg.tensor(np.random.default_rng(10).normal(size=(24, 40)).astype(np.float32))

    def f(x):
        return (x.tanh() * 3.0).softmax(-1), (x * x).sum(0).sqrt()
    want = [t.numpy() for t in tg.compile(f, backend="numpy")(x)]
    step = tg.compile(f)
    first = [t.numpy() for t in step(x)]
    calls = list(step.entries[-1].program.kernels.values())
    assert calls and not all(c.ready() for c in calls)       # returned before its loops were compiled
    for t in threading.enumerate():
        if t.name == "tracegrad-cpu-compile":
            t.join(timeout=300)
    assert all(c.ready() for c in calls)
    outs = [[t.numpy() for t in step(x)] for _ in range(3)]
    assert all(c.engine in ("loops", "numpy") for c in calls)
    for got in [first] + outs:
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6)
