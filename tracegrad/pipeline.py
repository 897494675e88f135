"""The pass pipeline of a compiled function: traced graph -> program, on the numpy or the Triton
backend. Every stage is recorded in a `PassManager`, so `step.ir(stage)` can show it.

    traced -> simplify -> decompose -> optimized (-> bucketed, data parallel) (-> fused, Triton) -> codegen
"""
from __future__ import annotations

from . import debug
from .ir.graph import Graph
from .ir.passes import PassManager, decompose, simplify
from .ir.passes.buckets import bucket_all_reduces


def choose_backend(requested: str, graph: Graph) -> str:
    """"auto" picks Triton when a tensor of the step lives on CUDA, numpy otherwise."""
    if requested == "triton" or (requested == "auto" and any(
            v.type.device.startswith("cuda") for v in (*graph.inputs, *graph.outputs))):
        return "triton"
    return "cpu" if requested == "cpu" else "numpy"


def lower(graph: Graph, stages: PassManager, backend: str, comm=None):
    """(final graph, program) from a recorded traced graph; `comm` carries out its collectives."""
    graph = stages.run("simplify", simplify, graph)
    if backend == "triton":   # composites with a kernel template stay whole; the rest is fused
        from .codegen.triton_codegen import template_applies
        from .ir.passes.fusion import fuse
        graph = stages.run("decompose", lambda g: decompose(g, template_applies), graph)
        graph = _optimize(graph, stages)
        debug.logger("fusion")   # TRACEGRAD_LOGS=fusion: every refused pair, with its reason
        graph = stages.run("fused", fuse, graph)
    elif backend == "cpu":    # the same groups as compiled loops; matmuls stay BLAS calls
        from .codegen.cpu_program import fuse_for_cpu
        graph = stages.run("decompose", lambda g: decompose(g, frozenset()), graph)
        graph = _optimize(graph, stages)
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
        from .codegen.triton_program import TritonProgram
        return TritonProgram(graph, comm)
    from .threads import apply_default
    apply_default()
    if backend == "cpu":
        from .codegen.cpu_program import generate as cpu_generate
        return cpu_generate(graph, comm)
    from .codegen.numpy_program import generate
    return generate(graph, comm)
