"""A fused graph as a Triton program: `TritonProgram(graph)` is callable on input arrays and
returns output arrays, like `numpy_program.NumpyProgram`.

On CPU arrays the generated kernels run under Triton's interpreter on numpy buffers (the CI
path); on CUDA arrays (CuPy, bf16 as `TypedArray`) they run compiled on the arrays' GPU, on
CuPy's current stream, without PyTorch. Between kernels the host function calls the runtime's
`Externs` (`rt.matmul`, `rt.empty`, the templates, collectives).
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph
from ..runtime import kernel_cache
from ..runtime.externs import Externs
from .eager import run_op
from .numpy_program import check_nan, check_nans_enabled
from .triton_codegen import Generated, generate


def target_of(graph: Graph) -> str:
    devs = {v.type.device for v in list(graph.inputs) + list(graph.outputs)}
    return "cuda" if any(d.startswith("cuda") for d in devs) else "interpret"


class TritonProgram:
    """A compiled step: `program(*arrays) -> tuple of arrays`; `.source` shows host code and kernels."""

    def __init__(self, graph: Graph, comm=None, target: str | None = None):
        self.graph = graph
        self.target = target or target_of(graph)
        self.generated: Generated = generate(graph, self.target, check_nans=check_nans_enabled())
        self.source = self.generated.source
        ns = Externs(self.target, run_op, comm).namespace()
        ns["check_nan"] = check_nan
        for ks in self.generated.kernels:
            ns[ks.name] = kernel_cache.load(ks.source, ks.name, ks.key)
        title = graph.meta.get("title", graph.name)
        exec(compile(self.generated.host, f"<tracegrad triton {title}>", "exec"), ns)
        self.fn = ns[graph.name]

    def __call__(self, *arrays):
        return tuple(np.asarray(o) if isinstance(o, np.generic) else o for o in self.fn(*arrays))
