"""The pass pipeline of a compiled function: traced graph -> program, on the numpy or the Triton
backend. Every stage is recorded in a `PassManager`, so `step.ir(stage)` can show it.

    traced (single device) (-> dp -> tp -> cp -> pp, with a mesh) -> simplify -> decompose
        -> optimized (-> bucketed) (-> fused, Triton) -> codegen

The parallel stages (`ir/passes/parallel/`) turn the single-device graph into this rank's graph,
one stage per mesh axis; the single-device graph stays printable as "traced".
"""
from __future__ import annotations

import functools
import importlib.util
import os

from . import debug
from .ir.graph import Graph
from .ir.passes import PassManager, decompose, simplify
from .codegen.cpu_program import generate as cpu_generate
from .codegen.numpy_program import generate
from .ir.passes.fusion import fuse
from .ir.passes.remat import rematerialize
from .ir.passes.parallel import (bucket_all_reduces, context_parallel, data_parallel, pipeline_parallel,
                                 tensor_parallel)
from .ir.passes.parallel.microbatch import split_microbatches
from .threads import apply_default
from .codegen.cpu_program import fuse_for_cpu


CPU_BACKENDS = ("cpu", "tiered", "numpy")       # what TRACEGRAD_CPU_BACKEND may say


def choose_backend(requested: str, graph: Graph, retrace: bool = False) -> str:
    """"auto" picks Triton when a tensor of the step lives on CUDA; on the CPU, the fused loops
    ("cpu": compiled by numba before the first call, each kernel on the engine recorded for it, so
    runs repeat bit for bit) where numba is installed, else numpy. `TRACEGRAD_CPU_BACKEND` overrides
    the CPU's: "numpy", or "tiered" (each group runs as its numpy ops until worker processes have
    compiled its loop, so no call waits for numba; the switch comes when the compile ends, so the
    first steps' bits vary from run to run).

    A `retrace` (the function's second and later graphs: new shapes, mostly) runs on numpy under
    "auto": the loops are compiled for one shape each, and a function called at many shapes (a
    sampling loop over a growing sequence) would pay numba's compile at every one, as torch.compile
    stops specializing at its first recompile."""
    if requested == "triton" or (requested == "auto" and any(
            v.type.device.startswith("cuda") for v in (*graph.inputs, *graph.outputs))):
        return "triton"
    if requested == "auto":
        wanted = os.environ.get("TRACEGRAD_CPU_BACKEND") or "cpu"
        if wanted not in CPU_BACKENDS:
            raise ValueError(f"TRACEGRAD_CPU_BACKEND={wanted!r}: expected one of {', '.join(CPU_BACKENDS)}")
        if wanted == "numpy" or retrace or not _has_numba():
            return "numpy"
        return "cpu:tiered" if wanted == "tiered" else "cpu"
    return "cpu" if requested == "cpu" else "numpy"


@functools.cache
def _has_numba() -> bool:
    return importlib.util.find_spec("numba") is not None


def parallelize(graph: Graph, stages: PassManager, mesh=None, rank: int = 0, plans: dict | None = None,
                batch: tuple = (), plan=None, microbatches: int = 1, schedule: str = "1f1b") -> Graph:
    """The single-device graph -> this rank's graph under `mesh` (a `Mesh`, for `tg.compile(mesh=)`)
    and the `plans` modules registered while tracing (`Trace.parallel`: DistributedDataParallel
    puts {"dp": (group, parameter input names)} there): the dp, tp, cp and pp passes, each a stage.
    `batch` names the inputs that are the step's arguments (split by cp and into micro-batches)."""
    plans = plans or {}
    if mesh is not None and mesh.dp > 1:
        group = mesh.dp_group(rank)
        graph = stages.run("dp", lambda g: data_parallel(g, group), graph)
    elif "dp" in plans and len(plans["dp"][0]) > 1:
        group, params = plans["dp"]
        graph = stages.run("dp", lambda g: data_parallel(g, group, frozenset(params)), graph)
    if mesh is None:
        return graph
    if mesh.tp > 1:
        group = mesh.group("tp", rank)
        graph = stages.run("tp", lambda g: tensor_parallel(g, group, rank, plan), graph)
    if mesh.cp > 1:
        group = mesh.group("cp", rank)
        graph = stages.run("cp", lambda g: context_parallel(g, group, rank, batch), graph)
    if mesh.pp > 1:
        group = mesh.group("pp", rank)
        graph = stages.run("pp", lambda g: pipeline_parallel(g, group, rank, batch, microbatches, schedule), graph)
    elif microbatches > 1:     # gradient accumulation without stages
        graph = stages.run("microbatch", lambda g: split_microbatches(g, batch, microbatches)[0], graph)
    return graph


def lower(graph: Graph, stages: PassManager, backend: str, comm=None):
    """(final graph, program) from a recorded traced graph; `comm` carries out its collectives."""
    graph = stages.run("simplify", simplify, graph)
    if backend == "triton":   # composites with a kernel template stay whole; the rest is fused
        from .codegen.triton_codegen import template_applies   # NOTE: imports triton, an optional extra
        from .codegen.triton_program import start_compile_workers   # NOTE: as does this
        start_compile_workers(graph)     # they import while the passes run
        graph = stages.run("decompose", lambda g: decompose(g, template_applies), graph)
        graph = _optimize(graph, stages)
        graph = stages.run("remat", rematerialize, graph)
        debug.logger("fusion")   # TRACEGRAD_LOGS=fusion: every refused pair, with its reason
        graph = stages.run("fused", fuse, graph)
    elif backend.startswith("cpu"):    # the same groups as compiled loops; matmuls stay BLAS calls
        graph = stages.run("decompose", lambda g: decompose(g, frozenset()), graph)
        graph = _optimize(graph, stages)
        graph = stages.run("remat", rematerialize, graph)
        debug.logger("fusion")
        graph = stages.run("fused", fuse_for_cpu, graph)
    else:
        graph = stages.run("decompose", lambda g: decompose(g, frozenset()), graph)
        graph = _optimize(graph, stages)
    return graph, codegen(graph, backend, comm)


def _optimize(graph: Graph, stages: PassManager) -> Graph:
    graph = stages.run("optimized", simplify, graph)
    if sum(n.op == "all_reduce" for n in graph.nodes) > 1:   # data parallel gradients: a few flat buckets
        graph = stages.run("bucketed", bucket_all_reduces, graph)
    return graph


def codegen(graph: Graph, backend: str = "numpy", comm=None):
    if backend == "triton":   # Triton kernels: compiled on CUDA buffers, interpreted on CPU ones
        from .codegen.triton_program import TritonProgram   # NOTE: imports triton, an optional extra
        return TritonProgram(graph, comm)
    apply_default()
    if backend.startswith("cpu"):
        return cpu_generate(graph, comm, tiered=backend == "cpu:tiered")
    return generate(graph, comm)
