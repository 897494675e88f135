"""Differentiable calls of a compiled function: `y = step(x); loss(y).backward()` reaches `x` and
the parameters the step read, as with `model = torch.compile(model)` (AOTAutograd).

When a call runs with grad enabled, the step did not call `backward()` itself, and some tensor it
reads requires grad, its outputs that require grad are linked to one tape node. That node's VJP
runs a second compiled program: the step's traced graph, differentiated by the IR's autodiff for
cotangents of those outputs, lowered through the same pipeline. It recomputes the forward from
the call's saved inputs; only the inputs are kept, not the intermediates (activation
checkpointing, as `jax.checkpoint` does it). It is built on the first backward, so calls whose
outputs are never differentiated pay nothing.
"""
from __future__ import annotations

from . import tensor as tensor_mod
from .creation import zeros
from .dispatch import TapeNode, grad_enabled
from .errors import UnsupportedError
from .ir.builder import GraphBuilder
from .ir.graph import Graph
from .ir.passes import PassManager
from .ir.passes.autodiff import backprop
from .pipeline import lower


def backward_graph(traced: Graph, diff_in: list[int], diff_out: list[int]) -> Graph:
    """Graph of (traced inputs..., cotangents of outputs[diff_out]...) -> grads of inputs[diff_in]."""
    b = GraphBuilder.continuing(traced, phase="backward")
    b.nodes = list(traced.nodes)
    seeds: dict = {}
    for i in diff_out:
        out = traced.outputs[i]
        cot = b.input(f"d_{out.name}_{i}", out.type)
        seeds[out] = b.add(seeds[out], cot) if out in seeds else cot   # an output returned twice
    wrt = [traced.inputs[j] for j in diff_in]
    grads = backprop(traced.nodes, b, seeds, wrt)
    grads = [g if g is not None else b.zeros_like(w) for g, w in zip(grads, wrt)]
    return b.finish(grads, meta={**traced.meta, "stage": "backward"})


class CompiledBackward:
    """The backward of one compiled signature; `attach` links a call's outputs to it."""

    def __init__(self, traced: Graph, diff_in: list[int], diff_out: list[int], backend: str, title: str,
                 comm=None):
        self.traced, self.diff_in, self.diff_out, self.comm = traced, diff_in, diff_out, comm
        self.backend, self.name, self.title = backend, title, f"{title}.backward"
        self.stages: PassManager | None = None
        self.program = None

    def _build(self) -> None:
        self.stages = PassManager(self.title)
        graph = self.stages.run("traced", lambda g: backward_graph(g, self.diff_in, self.diff_out), self.traced)
        _, self.program = lower(graph, self.stages, self.backend, self.comm)

    def graph(self, stage: str) -> Graph:
        """A stage of the backward program (built now if no backward has run yet)."""
        if self.program is None:
            self._build()
        return self.stages[stage]

    def attach(self, sources: list, outputs: list, ins: list) -> None:
        """Link `outputs` (the call's, at diff_out) to `sources` (its input tensors, at diff_in)."""
        Tensor = tensor_mod.Tensor
        types = [o._type for o in outputs]

        def vjp(b, node, cotangents):
            if grad_enabled():
                raise UnsupportedError(f"backward(create_graph=True) through the compiled {self.name}: "
                                       "its backward is a compiled program without a tape of its own")
            if self.program is None:
                self._build()
            cots = [g._data if g is not None else zeros(t.shape, dtype=t.dtype, device=t.device)._data
                    for g, t in zip(cotangents, types)]
            grads = self.program(*ins, *cots)
            return [Tensor._from_array(a, s._type) for a, s in zip(grads, sources)]

        node = TapeNode(f"compiled {self.name}", sources, outputs, {}, vjp=vjp)
        for o in outputs:
            o.requires_grad, o._node = True, node
