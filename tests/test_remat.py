"""Rematerialization (`ir/passes/remat.py`): the backward recomputes short elementwise chains of the
forward (GELU's pieces, a layer norm's output) from what it keeps anyway, so less stays alive
between the two; fusion keeps forward and backward work in separate kernels."""
from __future__ import annotations

import numpy as np

import tracegrad as tg
import tracegrad.nn as nn
from tracegrad.ir.passes.remat import rematerialize


def kept_bytes(graph) -> int:
    """Bytes the forward computes that a later phase reads (alive from one to the other)."""
    made = {o for n in graph.nodes if n.phase == "forward" and n.op != "full" for o in n.outputs}
    return sum(v.type.nbytes for v in {v for n in graph.nodes if n.phase != "forward" for v in n.inputs} & made)


def _step(backend):
    tg.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(32), nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 32))
    opt = tg.optim.SGD(model.parameters(), lr=0.1)

    @tg.compile(backend=backend)
    def step(x):
        loss = (model(x) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss
    return step, model


def test_the_backward_recomputes_gelu_and_layer_norm_outputs_instead_of_keeping_them():
    step, _ = _step("triton")
    x = tg.tensor(np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32))
    step(x)
    before, after = step.graphs()["optimized"], step.graphs()["remat"]
    assert kept_bytes(after) < kept_bytes(before)
    clones = [n for n in after.nodes if n.tag.startswith("remat:")]
    assert clones and all(n.phase == "backward" for n in clones)
    assert {"erf", "mul"} <= {n.op for n in clones}          # GELU's pieces come back in the backward
    # what it reads: only the hidden layer's pre-activation of all the [64, 128] forward values
    hidden = [v for v in {v for n in after.nodes if n.phase != "forward" for v in n.inputs}
              if v.type.shape in ((64, 128),) and any(v in n.outputs and n.phase == "forward" for n in after.nodes)]
    assert len(hidden) == 1
    assert rematerialize(after) is after or kept_bytes(rematerialize(after)) == kept_bytes(after)


def test_no_kernel_the_forward_reads_does_backward_work():
    """Backward work in a forward kernel would be done early and kept until the backward; forward
    work only the backward reads may join a backward kernel (a loss's softmax with its gradient)."""
    step, _ = _step("triton")
    step(tg.ones(8, 32))
    g = step.graphs()["fused"]
    readers = {}
    for n in g.nodes:
        for v in n.inputs:
            readers.setdefault(v, []).append(n)

    def readers_of(v):      # through the host's views
        for r in readers.get(v, ()):
            if r.op in ("reshape", "permute", "expand", "slice"):
                yield from (x for o in r.outputs for x in readers_of(o))
            else:
                yield r
    mixed = [n for n in g.nodes if n.op == "kernel"
             and {m.phase for m in n.attrs["body"].nodes if m.op != "full"} >= {"forward", "backward"}]
    for n in mixed:
        assert all(r.phase != "forward" for o in n.outputs for r in readers_of(o)), n.attrs["name"]


def test_rematerialized_steps_train_like_the_numpy_backend():
    x = tg.tensor(np.random.default_rng(1).standard_normal((16, 32)).astype(np.float32))
    (fused, m1), (plain, m2) = _step("triton"), _step("numpy")
    got, want = [float(fused(x)) for _ in range(3)], [float(plain(x)) for _ in range(3)]
    # NOTE: the interpreter's kernels and numpy sum in different orders: float32 rounding
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(m1[1].weight.numpy(), m2[1].weight.numpy(), rtol=1e-4, atol=1e-6)
