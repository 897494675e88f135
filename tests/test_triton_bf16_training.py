"""A small GPT trained with bf16 autocast through the Triton-interpreted path matches the numpy
backend: losses to 1e-3, and weights within what AdamW's sign-like first steps allow.

NOTE: Adam moves every weight by about lr per step whatever its gradient's size, so where a
gradient is rounding noise, bf16 rounding in two backends can flip its sign and the weights end
up to 2 * lr * steps apart. That, not the norm of the difference, is the bound to check.
"""
from __future__ import annotations

import numpy as np
import pytest

import tracegrad as tg

pytest.importorskip("triton")
LR, STEPS = 3e-4, 2


def _train(backend):
    from tracegrad.models.gpt import GPT, GPTConfig
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=96, n_layer=2, n_head=2, n_embd=64, dropout=0.0))
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=LR)

    @tg.compile(backend=backend)
    def train_step(x, y):
        with tg.autocast(tg.bfloat16):
            _, loss = model(x, y)
        loss.backward()
        tg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return loss
    rng = np.random.default_rng(0)
    x, y = (tg.tensor(rng.integers(0, 96, (2, 32))) for _ in range(2))
    losses = [train_step(x, y).item() for _ in range(STEPS)]
    return losses, {n: p.numpy() for n, p in model.named_parameters()}


def test_bf16_gpt_step_triton_matches_numpy():
    want_losses, want = _train("numpy")
    got_losses, got = _train("triton")
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-3)
    for name in want:
        assert np.abs(got[name] - want[name]).max() <= 2 * LR * STEPS * 1.05, name
