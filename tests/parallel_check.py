"""What the parallel-plan tests share: train a model a few optimizer steps on one device and
under a mesh of thread ranks, and compare losses and weights."""
from __future__ import annotations

import copy

import numpy as np

import tracegrad as tg


def train(model, batches, mesh=None, plan=None, clip=True, **compile_kw):
    # SGD with momentum: Adam would turn the rounding noise of gradients that are zero in exact
    # arithmetic into whole steps of lr, hiding what the tests compare
    opt = tg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def train_step(x, y):
        _, loss = model(x, y)
        loss.backward()
        if clip:
            tg.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        opt.zero_grad()
        return loss

    compile_kw.setdefault("backend", "numpy")
    step = tg.compile(train_step, mesh=mesh, plan=plan, **compile_kw)
    losses = [float(step(tg.tensor(x), tg.tensor(y)).item()) for x, y in batches]
    return losses, {k: v.numpy().copy() for k, v in model.state_dict().items()}, step


def check_plan(model, batches, mesh, plan=None, rtol=1e-5, **compile_kw):
    """Train a copy per rank under `mesh` and the model itself on one device; assert equal losses
    (the mean over dp ranks: each rank's loss is its rows') and weights. Returns the ranks' runs."""
    replicas = [copy.deepcopy(model) for _ in range(mesh.size)]
    want_losses, want_params, _ = train(model, batches, backend=compile_kw.get("backend", "numpy"))
    runs = tg.distributed.run_local(lambda rank, m: train(m, batches, mesh, plan, **compile_kw), mesh.size,
                                    [(m,) for m in replicas])
    for i, want in enumerate(want_losses):
        got = [r[0][i] for r in runs]
        dp_mean = np.mean([got[mesh.rank_of(dp=d)] for d in range(mesh.dp)])
        np.testing.assert_allclose(dp_mean, want, rtol=rtol, err_msg=f"loss of step {i}")
    for _, params, _ in runs:
        for name, want in want_params.items():
            # NOTE: split matmuls sum in another order than the whole one: fp32 rounding, not bits
            np.testing.assert_allclose(params[name], want, rtol=1e-4, atol=1e-6, err_msg=name)
    return runs


def held_bytes(model, opt) -> int:
    """Bytes of parameters and optimizer state this rank holds (a sharded tensor: its block)."""
    tensors = list(model.parameters()) + [t for s in opt.state.values() for t in s.values() if isinstance(t, tg.Tensor)]
    return sum(t._data.nbytes for t in tensors)
