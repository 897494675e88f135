"""The fused CPU backend: the numpy program of a fused graph whose kernels are compiled loops.

    fuse (the Triton backend's groups, matmuls left to BLAS) -> one numba loop nest per kernel
    (`cpu_codegen`) -> the host program: the numpy writer's straight-line function, each kernel
    one call (`k3_red_fused_softmax(t1)`), matmuls, scatters and collectives numpy calls as before

A kernel the loop writer does not take (half precision, random numbers) is put back as its numpy
ops, so every graph runs. `program.source` shows the host function and every kernel's loops.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..ir.graph import Graph, Node
from ..ir.passes.decompose import decompose
from ..ir.passes.fusion import fuse
from ..ir.passes.fusion_plan import Refuse
from ..runtime import cpu_kernels
from .cpu_codegen import Unsupported, write_kernel
from .numpy_program import NumpyProgram, generate as numpy_generate


@dataclass
class CpuProgram:
    program: NumpyProgram
    kernels: dict
    sources: dict

    @property
    def source(self) -> str:
        return self.program.source + "".join(f"\n# {k}\n{s}" for k, s in self.sources.items())

    @property
    def plan(self):
        return self.program.plan

    def __call__(self, *args):
        return self.program(*args)


def _np_dtype(d) -> np.dtype:
    return np.dtype(np.bool_) if d.name == "bool" else np.dtype(d.name)


def fuse_for_cpu(graph: Graph) -> Graph:
    """The fusion stage of the CPU backend: the Triton groups, with matmuls left alone."""
    return fuse(graph, epilogues=False, column_splits=False)


def generate(fused: Graph, comm=None, choose: bool | None = None, tiered: bool = False) -> CpuProgram:
    """The CPU program of a fused graph (see the module docstring). With `choose` (default: on,
    TRACEGRAD_CPU_CHOOSE=0 turns it off) each kernel keeps the faster of its loops and its numpy ops,
    measured on its second and third calls. `tiered` returns before the loops are compiled: each
    kernel runs its numpy ops until its loop is ready (with `choose` only)."""
    if choose is None:
        choose = os.environ.get("TRACEGRAD_CPU_CHOOSE", "1") != "0"
    written: dict[str, object] = {}

    def keep(n: Node) -> bool:
        if n.op != "kernel" or n.attrs["kind"] == "template":
            return False
        name = n.attrs["name"]
        if name not in written:
            try:
                written[name] = write_kernel(name, n.attrs["body"], n.attrs["kind"])
            except (Unsupported, Refuse):
                written[name] = None
        return written[name] is not None

    host = decompose(fused, keep)
    kernels, sources, typed = {}, {}, []
    for n in host.nodes:
        if n.op != "kernel":
            continue
        body, parts = n.attrs["body"], []
        pos_in = {v: j for j, v in enumerate(body.inputs)}
        pos_out = {v: j for j, v in enumerate(body.outputs)}
        for ks in written[n.attrs["name"]]:
            k = cpu_kernels.Kernel(ks.name, ks.source, ks.xnumel, ks.rnumel)
            typed.append((k, [_np_dtype(v.type.dtype) for v in ks.args]))
            n_in = sum(v in pos_in for v in ks.args)
            parts.append((k, [pos_in[v] for v in ks.args[:n_in]], [pos_out[v] for v in ks.args[n_in:]]))
            sources[ks.name] = ks.source
        outs = [(tuple(v.shape), _np_dtype(v.type.dtype)) for v in n.outputs]
        kernels[n.attrs["name"]] = cpu_kernels.Call(parts, outs, numpy_generate(body) if choose else None)
    cpu_kernels.compile_all(typed, background=tiered and choose)
    return CpuProgram(numpy_generate(host, comm, kernels=kernels), kernels, sources)
