"""tg.optim against PyTorch CPU: SGD/Adam/AdamW with param groups, weight decay, clipping and
gradient accumulation, eager and inside @tg.compile (losses and parameters to 1e-5 relative);
learning rates changed by a scheduler between compiled calls (no retrace); schedulers' values;
state_dict round trips."""
import math
import warnings

import numpy as np
import pytest
import torch

import tracegrad as tg
import tracegrad.nn as nn
import tracegrad.nn.functional as F
from tracegrad.optim import lr_scheduler as sched

RTOL, ATOL = 1e-5, 1e-6


def close(a, b, rtol=RTOL, atol=ATOL):
    a = a.numpy() if isinstance(a, tg.Tensor) else a
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else b
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol)


def mlp(lib):
    n = lib.nn
    return n.Sequential(n.Linear(6, 16), n.GELU(), n.LayerNorm(16), n.Linear(16, 4))


def make_pair(seed=0):
    tg.manual_seed(seed)
    m, tm = mlp(tg), mlp(torch)
    tm.load_state_dict({k: torch.tensor(np.array(v.numpy())) for k, v in m.state_dict().items()})
    return m, tm


def groups(model, lib, split):
    """Two param groups (weights / biases+norms) when split, with their own lr and weight decay."""
    if not split:
        return model.parameters()
    params = list(model.named_parameters())
    decay = [p for n, p in params if n.endswith("weight") and p.ndim == 2]
    rest = [p for n, p in params if not (n.endswith("weight") and p.ndim == 2)]
    return [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0, "lr": 0.03}]


def batches(n_steps, accum, seed=1):
    rng = np.random.default_rng(seed)
    return [[(rng.standard_normal((8, 6)).astype(np.float32), rng.integers(0, 4, 8)) for _ in range(accum)]
            for _ in range(n_steps)]


CONFIGS = {
    "sgd": (lambda lib: lib.optim.SGD, dict(lr=0.1), False),
    "sgd_momentum_wd": (lambda lib: lib.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01), False),
    "sgd_nesterov": (lambda lib: lib.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01), True),
    "sgd_dampening": (lambda lib: lib.optim.SGD, dict(lr=0.05, momentum=0.8, dampening=0.3), False),
    "adam": (lambda lib: lib.optim.Adam, dict(lr=0.01), False),
    "adam_wd_amsgrad": (lambda lib: lib.optim.Adam, dict(lr=0.01, weight_decay=0.05, amsgrad=True), False),
    "adamw_groups": (lambda lib: lib.optim.AdamW, dict(lr=0.01, betas=(0.9, 0.95)), True),
}


def run_tg(name, compiled, n_steps=6, accum=2, clip=1.0):
    opt_cls, kw, split = CONFIGS[name]
    m, _ = make_pair()
    opt = opt_cls(tg)(groups(m, tg, split), **kw)

    def train_step(micro):
        total = 0.0
        for x, y in micro:
            loss = F.cross_entropy(m(x), y) / len(micro)
            loss.backward()
            total = total + loss.detach()
        norm = nn.utils.clip_grad_norm_(m.parameters(), clip)
        opt.step()
        opt.zero_grad()
        return total, norm

    step = tg.compile(train_step) if compiled else train_step
    losses = []
    for micro in batches(n_steps, accum):
        loss, norm = step([(tg.tensor(x), tg.tensor(y)) for x, y in micro])
        losses.append((loss.item(), norm.item()))
    return m, opt, losses, step


def run_torch(name, n_steps=6, accum=2, clip=1.0):
    opt_cls, kw, split = CONFIGS[name]
    _, tm = make_pair()
    opt = opt_cls(torch)(groups(tm, torch, split), **kw)
    losses = []
    for micro in batches(n_steps, accum):
        total = 0.0
        for x, y in micro:
            loss = torch.nn.functional.cross_entropy(tm(torch.tensor(x)), torch.tensor(y)) / len(micro)
            loss.backward()
            total += loss.item()
        norm = torch.nn.utils.clip_grad_norm_(tm.parameters(), clip)
        opt.step()
        opt.zero_grad()
        losses.append((total, norm.item()))
    return tm, opt, losses


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_optimizer_matches_torch(name, compiled):
    m, opt, losses, step = run_tg(name, compiled)
    tm, topt, tlosses = run_torch(name)
    close(np.array(losses), np.array(tlosses))
    tparams = dict(tm.named_parameters())
    for n, p in m.named_parameters():
        close(p, tparams[n])
    tstate = topt.state_dict()["state"]
    for i, s in opt.state_dict()["state"].items():
        for k in ("exp_avg", "exp_avg_sq", "momentum_buffer", "max_exp_avg_sq"):
            if k in s and tstate[i].get(k) is not None:
                close(s[k], tstate[i][k])
    if compiled:
        assert len(step.entries) == 1


def test_clipping_changes_the_result():
    """Sanity check of the comparison: a tighter clip gives other parameters (in both libraries)."""
    m1, *_ = run_tg("adam", compiled=True, n_steps=2, clip=1e-3)
    m2, *_ = run_tg("adam", compiled=True, n_steps=2, clip=10.0)
    assert not np.allclose(m1[0].weight.numpy(), m2[0].weight.numpy())
    tm1, *_ = run_torch("adam", n_steps=2, clip=1e-3)
    close(m1[0].weight, tm1[0].weight)


def test_scheduler_between_compiled_calls_takes_effect_without_retrace():
    m, tm = make_pair(3)
    opt = tg.optim.AdamW(groups(m, tg, True), lr=0.02, weight_decay=0.1)
    topt = torch.optim.AdamW(groups(tm, torch, True), lr=0.02, weight_decay=0.1)

    def schedule(lib, o):
        s = lib.optim.lr_scheduler
        return s.SequentialLR(o, [s.LinearLR(o, 0.1, 1.0, 3), s.CosineAnnealingLR(o, 6, eta_min=1e-3)], [3])

    s, ts = schedule(tg, opt), schedule(torch, topt)

    @tg.compile
    def step(x, y):
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    for i, [(x, y)] in enumerate(batches(8, 1, seed=4)):
        loss = step(tg.tensor(x), tg.tensor(y))
        tloss = torch.nn.functional.cross_entropy(tm(torch.tensor(x)), torch.tensor(y))
        tloss.backward()
        topt.step()
        topt.zero_grad()
        close(loss, tloss)
        s.step()
        ts.step()
        np.testing.assert_allclose(s.get_last_lr(), ts.get_last_lr(), rtol=1e-12)
        assert len(step.entries) == 1, step.retrace_reasons
    tparams = dict(tm.named_parameters())
    for n, p in m.named_parameters():
        close(p, tparams[n])
    # a plain assignment works too, and an lr of 0 freezes the parameters
    for g in opt.param_groups:
        g["lr"] = 0.0
    before = [p.numpy().copy() for p in m.parameters()]
    step(tg.tensor(x), tg.tensor(y))
    for a, p in zip(before, m.parameters()):
        np.testing.assert_array_equal(a, p.numpy())
    assert len(step.entries) == 1
    with pytest.raises(RuntimeError, match="outside|between"):
        tg.compile(lambda: s.step())()


@pytest.mark.parametrize("make", [
    lambda lib, o: lib.optim.lr_scheduler.LambdaLR(o, lambda e: 0.9 ** e + 0.1 * (e % 3)),
    lambda lib, o: lib.optim.lr_scheduler.StepLR(o, 3, gamma=0.5),
    lambda lib, o: lib.optim.lr_scheduler.MultiStepLR(o, [2, 5, 9], gamma=0.3),
    lambda lib, o: lib.optim.lr_scheduler.ExponentialLR(o, 0.8),
    lambda lib, o: lib.optim.lr_scheduler.CosineAnnealingLR(o, 10, eta_min=0.01),
    lambda lib, o: lib.optim.lr_scheduler.LinearLR(o, 0.2, 0.9, 4),
    lambda lib, o: lib.optim.lr_scheduler.ConstantLR(o, 0.5, 3),
], ids=["lambda", "step", "multistep", "exponential", "cosine", "linear", "constant"])
def test_scheduler_values_match_torch(make):
    p, tp = nn.Parameter(tg.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    q, tq = nn.Parameter(tg.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = tg.optim.SGD([{"params": [p]}, {"params": [q], "lr": 0.3}], lr=0.1)
    topt = torch.optim.SGD([{"params": [tp]}, {"params": [tq], "lr": 0.3}], lr=0.1)
    s, ts = make(tg, opt), make(torch, topt)
    for _ in range(15):
        np.testing.assert_allclose(s.get_last_lr(), ts.get_last_lr(), rtol=1e-9)
        np.testing.assert_allclose([g["lr"] for g in opt.param_groups], [g["lr"] for g in topt.param_groups],
                                   rtol=1e-9)
        opt.step(), topt.step()
        s.step(), ts.step()


def test_warmup_cosine_is_nanogpts_schedule_and_round_trips():
    def nanogpt_lr(it, lr=6e-4, warmup=5, decay=20, min_lr=6e-5):
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        if it > decay:
            return min_lr
        ratio = (it - warmup) / (decay - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    p = nn.Parameter(tg.zeros(2))
    opt = tg.optim.AdamW([p], lr=6e-4)
    s = sched.WarmupCosineLR(opt, warmup_iters=5, lr_decay_iters=20, min_lr=6e-5)
    for it in range(25):
        assert opt.param_groups[0]["lr"] == pytest.approx(nanogpt_lr(it), rel=1e-12)
        if it == 10:
            saved = s.state_dict()
        s.step()
    s2 = sched.WarmupCosineLR(tg.optim.AdamW([nn.Parameter(tg.zeros(2))], lr=6e-4), 5, 20, min_lr_ratio=0.1)
    s2.load_state_dict(saved)
    s2.step()
    assert s2.get_last_lr()[0] == pytest.approx(nanogpt_lr(11), rel=1e-12)


def test_optimizer_state_dict_round_trip_resumes_exactly():
    # uninterrupted: 6 compiled steps
    m_ref, _, losses_ref, _ = run_tg("adamw_groups", compiled=True, n_steps=6)
    # 3 steps, save, then a fresh model + optimizer load the state and run 3 more
    m1, opt1, losses1, _ = run_tg("adamw_groups", compiled=True, n_steps=3)
    msd, osd = m1.state_dict(), opt1.state_dict()
    assert set(osd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"} and osd["state"][0]["step"].item() == 3
    assert [g["params"] for g in osd["param_groups"]] == [[0, 1], [2, 3, 4, 5]]
    assert osd["param_groups"][1]["lr"] == 0.03

    m2, tm2 = make_pair(7)
    opt_cls, kw, split = CONFIGS["adamw_groups"]
    opt2 = tg.optim.AdamW(groups(m2, tg, True), **kw)
    m2.load_state_dict(msd)
    opt2.load_state_dict(osd)

    @tg.compile
    def step(micro):
        total = 0.0
        for x, y in micro:
            loss = F.cross_entropy(m2(x), y) / len(micro)
            loss.backward()
            total = total + loss.detach()
        nn.utils.clip_grad_norm_(m2.parameters(), 1.0)
        opt2.step()
        opt2.zero_grad()
        return total

    for micro in batches(6, 2)[3:]:
        step([(tg.tensor(x), tg.tensor(y)) for x, y in micro])
    for p, q in zip(m_ref.parameters(), m2.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())

    # loading into an optimizer whose state a compiled step already holds writes it in place
    held = opt2.state[next(iter(m2.parameters()))]["exp_avg"]
    opt2.load_state_dict(osd)
    assert opt2.state[next(iter(m2.parameters()))]["exp_avg"] is held
    np.testing.assert_array_equal(held.numpy(), osd["state"][0]["exp_avg"].numpy())

    # PyTorch's optimizer loads tracegrad's state dict (through numpy) and vice versa
    topt = torch.optim.AdamW(groups(tm2, torch, True), **kw)
    tsd = {"state": {i: {k: torch.tensor(np.array(v.numpy())) for k, v in s.items()} for i, s in osd["state"].items()},
           "param_groups": osd["param_groups"]}
    topt.load_state_dict(tsd)
    back = topt.state_dict()
    opt3 = tg.optim.AdamW(groups(mlp(tg), tg, True), **kw)
    opt3.load_state_dict({"state": {i: {k: v.numpy() for k, v in s.items()} for i, s in back["state"].items()},
                          "param_groups": back["param_groups"]})
    close(opt3.state_dict()["state"][3]["exp_avg_sq"], osd["state"][3]["exp_avg_sq"])


def test_sgd_state_and_structural_change_warning():
    m, _ = make_pair()
    opt = tg.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    step = tg.compile(lambda x, y: (F.cross_entropy(m(x), y).backward(), opt.step(), opt.zero_grad()))
    [(x, y)] = batches(1, 1)[0]
    step(tg.tensor(x), tg.tensor(y))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.param_groups[0]["momentum"] = 0.5          # live: fine
    with pytest.warns(UserWarning, match="nesterov"):
        opt.param_groups[0]["nesterov"] = True         # structural: the compiled step cannot follow
    assert "momentum_buffer" in opt.state_dict()["state"][0]


def test_optimizer_api_errors_and_repr():
    p = nn.Parameter(tg.zeros(2))
    with pytest.raises(ValueError, match="empty"):
        tg.optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="more than one"):
        tg.optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="Nesterov"):
        tg.optim.SGD([p], lr=0.1, nesterov=True)
    opt = tg.optim.Adam([p], lr=0.1)
    assert "Parameter Group 0" in repr(opt) and "lr: 0.1" in repr(opt)
    opt.add_param_group({"params": [nn.Parameter(tg.ones(3))], "lr": 0.5})
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["betas"] == (0.9, 0.999)
    p.grad = tg.ones(2)
    opt.step()
    assert opt.state[p]["step"].item() == 1.0
    opt.zero_grad(set_to_none=False)
    assert p.grad is not None and float(p.grad.abs().sum()) == 0


def test_accumulate_eagerly_then_compiled_optimizer_step():
    """Gradients accumulated by eager backward() calls, then a compiled clip + step + zero_grad."""
    def run(compiled):
        m, _ = make_pair(5)
        opt = tg.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)

        def update():
            nn.utils.clip_grad_norm_(m.parameters(), 0.5)
            opt.step()
            opt.zero_grad()
        update_fn = tg.compile(update) if compiled else update
        for micro in batches(3, 2):
            for x, y in micro:
                F.cross_entropy(m(tg.tensor(x)), tg.tensor(y)).backward()
            update_fn()
        return m
    # eager and compiled steps may hand BLAS operands in different layouts: fp32 rounding apart
    for p, q in zip(run(False).parameters(), run(True).parameters()):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-5, atol=1e-7)
