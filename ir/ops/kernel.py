"""`kernel`: one fused kernel of the fused graph, holding the sub-graph it computes.

The fusion pass replaces each group of nodes by a `kernel` node whose `body` attribute is a
`Graph` (inputs: the values the kernel reads; outputs: the values it writes; both are the outer
graph's own `Value`s, so names stay stable). `name` is the kernel's name (`k1_red_fused_softmax`),
`kind` its shape: "pointwise", "reduction", "foreach" (independent groups in one launch, the
body's `meta["parts"]` lists them) or "template" (a matmul with its epilogue, an attention or
cross-entropy template).

It is registered as a composite whose decomposition replays the body, so any backend without a
kernel lowering (the numpy reference) runs a fused graph after `decompose`.
"""
from __future__ import annotations

from ..graph import Graph
from ..types import TensorType
from .registry import decomposition, defop, fail

KINDS = ("pointwise", "reduction", "foreach", "template")


class Body(Graph):
    """A kernel's sub-graph; prints short inside a node's attributes."""

    def __repr__(self) -> str:
        return f"<{len(self.nodes)} ops>"


def _kernel_infer(ts, body, name, kind, info):
    if body is None:
        fail("kernel", ts, "needs a body graph")
    want = [v.type for v in body.inputs]
    if list(ts) != want:
        fail("kernel", ts, f"{name} reads {', '.join(map(str, want))}")
    return [TensorType(v.type.shape, v.type.dtype, v.type.device) for v in body.outputs]


defop("kernel", "composite", _kernel_infer, None, dict(body=None, name="kernel", kind="pointwise", info=""),
      doc="a fused kernel: `body` is the sub-graph it computes")


@decomposition("kernel")
def _inline(b, *inputs, body, name, kind, info):
    env = dict(zip(body.inputs, inputs))
    for n in body.nodes:
        with b.scope(n, n.tag):
            outs = b.emit(n.op, [env[v] for v in n.inputs], dict(n.attrs))
        env.update(zip(n.outputs, outs))
    outs = tuple(env[v] for v in body.outputs)
    return outs if len(outs) != 1 else outs[0]
