"""Adam/AdamW's eager update on host buffers (`adam._host_update`) against the tensor-op update it
stands in for, and against a compiled step."""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad.optim import adam


def _run(cls, host: bool, steps=4, **kw):
    rng = np.random.default_rng(1)
    ps = [tg.nn.Parameter(tg.tensor(rng.normal(size=s).astype(np.float32))) for s in ((5, 3), (7,))]
    opt = cls(ps, **kw)
    used = []
    real = adam._host_update
    adam._host_update = (lambda *a: used.append(real(*a)) or used[-1]) if host else (lambda *a: False)
    try:
        for i in range(steps):
            for p in ps:
                p.grad = tg.tensor(np.random.default_rng(i).normal(size=p.shape).astype(np.float32))
            if i == 2:
                opt.param_groups[0]["lr"] = 3e-3     # a scheduler's change reaches both paths
            opt.step()
    finally:
        adam._host_update = real
    return [p.numpy() for p in ps] + [opt.state[p][k].numpy() for p in ps for k in ("exp_avg", "exp_avg_sq")], used


@pytest.mark.parametrize("cls,kw", [(tg.optim.AdamW, dict(lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95))),
                                    (tg.optim.Adam, dict(lr=1e-2, weight_decay=0.05))])
def test_host_update_equals_the_tensor_ops(cls, kw):
    got, used = _run(cls, True, **kw)
    want, _ = _run(cls, False, **kw)
    assert used and all(used)
    # NOTE: bit-equal on purpose: the same elementwise numpy calls on the same dtypes in the same order
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_amsgrad_keeps_the_tensor_ops():
    _, used = _run(tg.optim.Adam, True, lr=1e-2, amsgrad=True)
    assert used and not any(used)


def test_eager_adamw_matches_a_compiled_step():
    def make():
        tg.manual_seed(0)
        model = tg.nn.Linear(6, 4)
        return model, tg.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)

    x = tg.tensor(np.random.default_rng(2).normal(size=(8, 6)).astype(np.float32))
    eager, compiled = make(), make()

    def step(model, opt):
        loss = (model(x) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    fn = tg.compile(lambda: step(*compiled), backend="numpy")
    for _ in range(3):
        step(*eager)
        fn()
    # NOTE: the gradients come from different programs (eager ops vs one compiled graph), so the
    # weights agree to fp32 rounding, not bitwise
    for a, b in zip(eager[0].parameters(), compiled[0].parameters()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
