"""A fused graph as a Triton program: `TritonProgram(graph)` is callable on input arrays and
returns output arrays, like `numpy_program.NumpyProgram`.

On CPU arrays the generated kernels run under Triton's interpreter on numpy buffers (the CI
path); on CUDA arrays (CuPy, bf16 as `TypedArray`) they run compiled on the arrays' GPU, on
CuPy's current stream, without PyTorch. Between kernels the host function calls the runtime's
`Externs` (`rt.matmul`, `rt.empty`, the templates, collectives).

On CUDA, calls from the second on replay the step as one CUDA graph (`runtime.cuda_graph`), and the
kernels are compiled before the first call launches any, all at once in worker processes (each
distinct kernel once; `runtime.compile_ahead`), instead of one by one at their first launch. A profiled call
(`TRACEGRAD_PROFILE=1`, or `step.profile(...)`) runs a twin of the host function that records a CUDA
event before every launch; `launch_ms` keeps each launch's average time for `step.explain()`.
"""
from __future__ import annotations

import functools
import logging
import os
import time

import numpy as np

from ..ir.graph import Graph
from ..runtime import kernel_cache
from ..runtime.cuda_graph import CapturedStep
from ..runtime.devices import device_index
from ..runtime.externs import Externs
from ..runtime.index_flags import IndexFlags
from ..runtime.nan_flags import NanFlags
from .eager import run_op
from .numpy_program import check_nans_enabled
from .triton_codegen import Generated, generate, launch_config


def device_of(graph: Graph) -> str:
    """The CUDA device a step runs on."""
    return next((v.type.device for v in list(graph.inputs) + list(graph.outputs)
                 if v.type.device.startswith("cuda")), "cuda:0")


def target_of(graph: Graph) -> str:
    devs = {v.type.device for v in list(graph.inputs) + list(graph.outputs)}
    return "cuda" if any(d.startswith("cuda") for d in devs) else "interpret"


def start_compile_workers(graph: Graph) -> None:
    """On CUDA, start the processes that will compile the step's kernels (runtime/compile_pool.py),
    so they import while the graph passes run."""
    if target_of(graph) == "cuda":
        from ..runtime.compile_ahead import start_workers
        start_workers(device_index(device_of(graph)))


class TritonProgram:
    """A compiled step: `program(*arrays) -> tuple of arrays`; `.source` shows host code and kernels."""

    def __init__(self, graph: Graph, comm=None, target: str | None = None):
        self.graph = graph
        self.sends = any(n.op == "send" for n in graph.nodes)
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
        self.device = device_of(graph) if self.target == "cuda" else "cpu"
        # NOTE: one small buffer of flags for the step's index checks, read lazily (index_flags.py)
        self.flags = self.rt.flags = IndexFlags(self.generated.sites, self.device)
        for k in range(len(self.generated.sites)):
            ns[f"chk{k}"] = self.flags.row(k)
        ns["nan"] = NanFlags(self.generated.nan_wheres, self.device)
        for ks in self.generated.kernels:
            ns[ks.name] = kernel_cache.load(ks.source, ks.name, ks.key)
        lap("load")
        title = graph.meta.get("title", graph.name)
        exec(compile(self.generated.host, f"<tracegrad triton {title}>", "exec"), ns)
        self.fn = ns[graph.name]
        self._ns = ns
        lap("host")
        self.profiling = os.environ.get("TRACEGRAD_PROFILE", "") not in ("", "0")
        self.launch_ms: dict[int, float] = {}    # launch number -> ms per profiled call
        self.profiled_calls = 0
        self.graphed = CapturedStep(self.fn) if self._graphable(comm) else None
        self.compiled_ahead = self.target != "cuda"

    def _graphable(self, comm) -> bool:
        """Whether calls replay as a CUDA graph: on CUDA, one process (collectives of several run on
        the host), without per-value NaN checks; TRACEGRAD_CUDA_GRAPHS=0 turns it off."""
        return (self.target == "cuda" and os.environ.get("TRACEGRAD_CUDA_GRAPHS", "1") != "0"
                and getattr(comm, "world_size", 1) == 1 and not check_nans_enabled())

    @functools.cached_property
    def timed_fn(self):
        """The host function with a `rt.mark` before each launch, compiled at the first profiled call."""
        timed = dict(self._ns)
        title = self.graph.meta.get("title", self.graph.name)
        exec(compile(self.generated.timed_host, f"<tracegrad triton {title} (profiled)>", "exec"), timed)
        return timed[self.graph.name]

    def _compile_ahead(self, arrays) -> None:
        """Before the first call launches anything: a dry run of the host function on `arrays` finds
        every launch it will make, templates included, and the distinct kernels compile at once
        (runtime/compile_ahead.py). Kernels the dry run did not reach (it stops at what needs another
        rank) compile from the generated list."""
        from ..runtime.compile_ahead import collecting, precompile
        from ..runtime.compile_worker import Pointer
        t0 = time.perf_counter()
        launches = []
        self.rt.dry = True
        try:
            with collecting() as launches:
                self.fn(*arrays)
        except Exception as e:     # NOTE: the launches recorded so far still compile ahead
            logging.getLogger("tracegrad.compile").debug("dry run of %s stopped: %s", self.graph.name, e)
        finally:
            self.rt.dry = False
        for ks in self.generated.kernels:
            _, meta = launch_config(ks, "cuda")
            chk = ([np.int64] if ks.sites else []) + ([np.int32] if "nan_ptr" in ks.source else [])
            launches.append((self._ns[ks.name], [Pointer(v.type.dtype.np) for v in ks.args] +
                             [Pointer(d) for d in chk], meta))
        dry_ms = (time.perf_counter() - t0) * 1e3
        self.compile_counts = dict(precompile(launches, device_index(device_of(self.graph))), dry_ms=dry_ms)
        self.compile_ms["precompile"] = (time.perf_counter() - t0) * 1e3

    def __call__(self, *arrays):
        if not self.compiled_ahead:
            self.compiled_ahead = True
            self._compile_ahead(arrays)
        if self.profiling:
            return self.profiled(*arrays)
        outs = self.graphed(*arrays) if self.graphed is not None else self.fn(*arrays)
        if self.sends:          # sends return at once (comm.py); done before the step returns
            self.rt.comm.wait_sends()
        outs = tuple(np.asarray(o) if isinstance(o, np.generic) else o for o in outs)
        self.flags.ran()
        return outs

    def profiled(self, *arrays):
        """One call with each launch timed (CUDA events around it on the GPU); the times average
        into `launch_ms`, which `step.explain()` shows as each kernel's share of the step."""
        outs = self.timed_fn(*arrays)
        if self.sends:
            self.rt.comm.wait_sends()
        n = self.profiled_calls
        for k, ms in self.rt.launch_times().items():
            self.launch_ms[k] = (self.launch_ms.get(k, 0.0) * n + ms) / (n + 1)
        self.profiled_calls = n + 1
        self.flags.ran()
        return tuple(np.asarray(o) if isinstance(o, np.generic) else o for o in outs)
