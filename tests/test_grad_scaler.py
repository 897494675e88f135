"""`tg.amp.GradScaler` against `torch.amp.GradScaler`: the same scales, skips and parameters, step
by step, eagerly and in one compiled step that serves skipped and taken steps alike."""
from __future__ import annotations

import numpy as np
import pytest

import tracegrad as tg

torch = pytest.importorskip("torch")

# the batch of step 2 and 5 overflows (inf in the input), the others do not
BATCHES = [np.full((4, 3), v, np.float32) * np.arange(1, 13, dtype=np.float32).reshape(4, 3) / 10
           for v in (1.0, 2.0, np.inf, 0.5, 1.5, np.inf, 1.0, 0.7)]
KW = dict(init_scale=1024.0, growth_factor=2.0, backoff_factor=0.25, growth_interval=2)


def _torch_run():
    lin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)))
        lin.bias.copy_(torch.tensor([0.1, -0.2]))
    opt = torch.optim.Adam(lin.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", **KW)
    out = []
    for x in BATCHES:
        loss = lin(torch.tensor(x)).square().mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        out.append((scaler.get_scale(), lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy()))
    return out


def _tracegrad_run(compiled: bool):
    lin = tg.nn.Linear(3, 2)
    with tg.no_grad():
        lin.weight.copy_(tg.tensor(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)))
        lin.bias.copy_(tg.tensor([0.1, -0.2]))
    opt = tg.optim.Adam(lin.parameters(), lr=0.1)
    scaler = tg.amp.GradScaler(**KW)

    def step(x):
        loss = lin(x).square().mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    step = tg.compile(step) if compiled else step
    out = []
    for x in BATCHES:
        step(tg.tensor(x))
        out.append((scaler.get_scale(), lin.weight.numpy().copy(), lin.bias.numpy().copy()))
    return out, step


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_grad_scaler_matches_pytorch(compiled):
    want = _torch_run()
    got, step = _tracegrad_run(compiled)
    scales = [s for s, _, _ in want]
    assert scales == [1024.0, 2048.0, 512.0, 512.0, 1024.0, 256.0, 256.0, 512.0]   # the oracle took both paths
    for i, ((s0, w0, b0), (s1, w1, b1)) in enumerate(zip(want, got)):
        assert s1 == s0, f"step {i}: scale {s1} != torch's {s0}"
        np.testing.assert_allclose(w1, w0, rtol=1e-5, atol=1e-6, err_msg=f"weight after step {i}")
        np.testing.assert_allclose(b1, b0, rtol=1e-5, atol=1e-6, err_msg=f"bias after step {i}")
    if compiled:
        assert len(step.entries) == 1    # skipped and taken steps ran the same compiled step


def test_state_dict_round_trip_and_disabled_scaler():
    a = tg.amp.GradScaler(init_scale=8.0, growth_interval=3)
    b = tg.amp.GradScaler()
    b.load_state_dict(a.state_dict())
    assert b.get_scale() == 8.0 and b.growth_interval == 3
    off = tg.amp.GradScaler(enabled=False)
    loss = tg.tensor(2.0)
    assert off.scale(loss) is loss and off.get_scale() == 1.0 and off.state_dict() == {}
    with pytest.raises(ValueError, match="backoff_factor"):
        tg.amp.GradScaler(backoff_factor=2.0)
