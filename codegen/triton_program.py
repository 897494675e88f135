"""A fused graph as a Triton program: `TritonProgram(graph)` is callable on input arrays and
returns output arrays, like `numpy_program.NumpyProgram`.

On CPU arrays the generated kernels run under Triton's interpreter on numpy buffers (the CI
path); on CUDA arrays (CuPy, bf16 as `TypedArray`) they run compiled on the arrays' GPU, on
CuPy's current stream, without PyTorch. Between kernels the host function calls the runtime's
`Externs` (`rt.matmul`, `rt.empty`, the templates, collectives).

On CUDA the kernels are compiled when the program is built, in a thread pool (each structurally
distinct kernel once), instead of one by one at their first launch. A profiled call
(`TRACEGRAD_PROFILE=1`, or `step.profile(...)`) runs a twin of the host function that records a CUDA
event before every launch; `launch_ms` keeps each launch's average time for `step.explain()`.
"""
from __future__ import annotations

import functools
import os
import time

import numpy as np

from ..ir.graph import Graph
from ..runtime import kernel_cache
from ..runtime.externs import Externs
from .eager import run_op
from .numpy_program import check_nan, check_nans_enabled
from .triton_codegen import Generated, generate, launch_config


def target_of(graph: Graph) -> str:
    devs = {v.type.device for v in list(graph.inputs) + list(graph.outputs)}
    return "cuda" if any(d.startswith("cuda") for d in devs) else "interpret"


class TritonProgram:
    """A compiled step: `program(*arrays) -> tuple of arrays`; `.source` shows host code and kernels."""

    def __init__(self, graph: Graph, comm=None, target: str | None = None):
        self.graph = graph
        self.target = target or target_of(graph)
        clock = time.perf_counter()
        self.compile_ms: dict[str, float] = {}     # phase -> ms of building this program (benchmarks/compile_time.py)

        def lap(phase):
            nonlocal clock
            now = time.perf_counter()
            self.compile_ms[phase] = (now - clock) * 1e3
            clock = now
        self.generated: Generated = generate(graph, self.target, check_nans=check_nans_enabled())
        self.source = self.generated.source
        lap("generate")
        self.rt = Externs(self.target, run_op, comm)
        ns = self.rt.namespace()
        ns["check_nan"] = check_nan
        for ks in self.generated.kernels:
            ns[ks.name] = kernel_cache.load(ks.source, ks.name, ks.key)
        lap("load")
        if self.target == "cuda" and self.generated.kernels:
            self._precompile(ns, graph)
        lap("precompile")
        title = graph.meta.get("title", graph.name)
        exec(compile(self.generated.host, f"<tracegrad triton {title}>", "exec"), ns)
        self.fn = ns[graph.name]
        self._ns = ns
        lap("host")
        self.profiling = os.environ.get("TRACEGRAD_PROFILE", "") not in ("", "0")
        self.launch_ms: dict[int, float] = {}    # launch number -> ms per profiled call
        self.profiled_calls = 0

    @functools.cached_property
    def timed_fn(self):
        """The host function with a `rt.mark` before each launch, compiled at the first profiled call."""
        timed = dict(self._ns)
        title = self.graph.meta.get("title", self.graph.name)
        exec(compile(self.generated.timed_host, f"<tracegrad triton {title} (profiled)>", "exec"), timed)
        return timed[self.graph.name]

    def _precompile(self, ns, graph: Graph) -> None:
        """Compile the step's kernels in parallel now rather than one by one at their first launch."""
        from ..runtime.triton_host import precompile
        dev = next((v.type.device for v in list(graph.inputs) + list(graph.outputs)
                    if v.type.device.startswith("cuda")), "cuda:0")
        jobs = []
        for ks in self.generated.kernels:
            grid, meta = launch_config(ks, "cuda")
            jobs.append((ns[ks.name], [v.type.dtype.np for v in ks.args], grid, meta))
        precompile(jobs, int(dev.split(":")[1]) if ":" in dev else 0)

    def __call__(self, *arrays):
        if self.profiling:
            return self.profiled(*arrays)
        return tuple(np.asarray(o) if isinstance(o, np.generic) else o for o in self.fn(*arrays))

    def profiled(self, *arrays):
        """One call with each launch timed (CUDA events around it on the GPU); the times average
        into `launch_ms`, which `step.explain()` shows as each kernel's share of the step."""
        outs = self.timed_fn(*arrays)
        n = self.profiled_calls
        for k, ms in self.rt.launch_times().items():
            self.launch_ms[k] = (self.launch_ms.get(k, 0.0) * n + ms) / (n + 1)
        self.profiled_calls = n + 1
        return tuple(np.asarray(o) if isinstance(o, np.generic) else o for o in outs)
