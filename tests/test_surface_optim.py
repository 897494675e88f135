"""RMSprop, Adagrad, Adadelta, OneCycleLR and ReduceLROnPlateau against torch.optim, step for step."""
import numpy as np
import pytest
import torch

import tracegrad as tg
from tests.torch_compare import close

# NOTE: our scalar hyperparameters are float64 tensors, PyTorch's Python floats; the updates agree
# to fp32 rounding, compounded over a few steps
RTOL, ATOL = 1e-5, 1e-6

OPTS = [("RMSprop", dict(lr=0.01)), ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1)),
        ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.05, initial_accumulator_value=0.1)),
        ("Adadelta", dict(lr=1.0, rho=0.8, weight_decay=0.01))]


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal((3, 4)).astype(np.float32)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    return w0, x


def _run_torch(name, kw, steps=5):
    w0, x = _problem()
    w = torch.tensor(w0, requires_grad=True)
    opt = getattr(torch.optim, name)([w], **kw)
    for _ in range(steps):
        ((torch.tensor(x) @ w).tanh() ** 2).sum().backward()
        opt.step()
        opt.zero_grad()
    return w.detach().numpy()


@pytest.mark.parametrize("name,kw", OPTS)
def test_eager_matches_torch(name, kw):
    w0, x = _problem()
    w = tg.nn.Parameter(tg.tensor(w0))
    opt = getattr(tg.optim, name)([w], **kw)
    for _ in range(5):
        ((tg.tensor(x) @ w).tanh() ** 2).sum().backward()
        opt.step()
        opt.zero_grad()
    close(w, _run_torch(name, kw), RTOL, ATOL)


@pytest.mark.parametrize("name,kw", OPTS[1:3])
def test_compiled_matches_torch(name, kw):
    w0, x = _problem()
    w = tg.nn.Parameter(tg.tensor(w0))
    opt = getattr(tg.optim, name)([w], **kw)

    @tg.compile
    def step(x):
        ((x @ w).tanh() ** 2).sum().backward()
        opt.step()
        opt.zero_grad()

    for _ in range(5):
        step(tg.tensor(x))
    close(w, _run_torch(name, kw), RTOL, ATOL)


@pytest.mark.parametrize("kw", [dict(max_lr=0.1, total_steps=20), dict(max_lr=0.1, epochs=2, steps_per_epoch=10,
                                                                       anneal_strategy="linear", three_phase=True)])
def test_one_cycle_lr(kw):
    p = tg.nn.Parameter(tg.ones(1))
    pt = torch.nn.Parameter(torch.ones(1))
    for opt_name, okw in (("SGD", dict(lr=0.1, momentum=0.9)), ("AdamW", dict(lr=0.1))):
        opt = getattr(tg.optim, opt_name)([p], **okw)
        opt_t = getattr(torch.optim, opt_name)([pt], **okw)
        s = tg.optim.lr_scheduler.OneCycleLR(opt, **kw)
        st = torch.optim.lr_scheduler.OneCycleLR(opt_t, **kw)
        for _ in range(19):
            assert s.get_last_lr() == pytest.approx(st.get_last_lr(), rel=1e-9)
            key = "momentum" if opt_name == "SGD" else "betas"
            assert opt.param_groups[0][key] == pytest.approx(opt_t.param_groups[0][key])
            opt_t.step()
            s.step()
            st.step()


def test_reduce_lr_on_plateau():
    p = tg.nn.Parameter(tg.ones(1))
    pt = torch.nn.Parameter(torch.ones(1))
    opt, opt_t = tg.optim.SGD([p], lr=1.0), torch.optim.SGD([pt], lr=1.0)
    kw = dict(mode="min", factor=0.5, patience=2, cooldown=1, min_lr=0.1, threshold=0.01)
    s, st = tg.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw), torch.optim.lr_scheduler.ReduceLROnPlateau(opt_t, **kw)
    metrics = [1.0, 0.9, 0.95, 0.91, 0.92, 0.93, 0.8, 0.85, 0.86, 0.87, 0.88, 0.89, 0.9, 0.91, 0.92]
    for m in metrics:
        s.step(tg.tensor(m))
        st.step(m)
        assert opt.param_groups[0]["lr"] == pytest.approx(opt_t.param_groups[0]["lr"])
    assert opt.param_groups[0]["lr"] < 1.0
