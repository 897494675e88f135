"""The demo's training step on the CPU: tracegrad (`tg.compile`, numpy backend) against PyTorch
eager and torch.compile, on the same GPT (nanoGPT names, tied head), the same weights and batches.

    python benchmarks/cpu_train.py                      # the demo's model: 4 layers, 128 wide, 16 x 64 tokens
    python benchmarks/cpu_train.py --steps 20 --no-torch-compile

Each implementation runs forward, backward, gradient clipping and an AdamW step; the losses of the
first steps are checked against each other before anything is timed. Times are medians over steps.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import tracegrad as tg
from tracegrad.models.gpt import GPT, GPTConfig


class TorchBlock(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.n_head = c.n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(c.n_embd), nn.LayerNorm(c.n_embd)
        self.attn = nn.ModuleDict(dict(c_attn=nn.Linear(c.n_embd, 3 * c.n_embd), c_proj=nn.Linear(c.n_embd, c.n_embd)))
        self.mlp = nn.ModuleDict(dict(c_fc=nn.Linear(c.n_embd, 4 * c.n_embd), c_proj=nn.Linear(4 * c.n_embd, c.n_embd)))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(C, 2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.attn.c_proj(y)
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh"))


class TorchGPT(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c.vocab_size, c.n_embd), wpe=nn.Embedding(c.block_size, c.n_embd),
            h=nn.ModuleList(TorchBlock(c) for _ in range(c.n_layer)), ln_f=nn.LayerNorm(c.n_embd)))
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, idx, targets):
        t = self.transformer
        x = t.wte(idx) + t.wpe(torch.arange(idx.shape[1]))
        for block in t.h:
            x = block(x)
        logits = self.lm_head(t.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def torch_step(model, opt):
    def step(x, y):
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()
    return step


def tracegrad_step(model, opt):
    @tg.compile
    def step(x, y):
        _, loss = model(x, y)
        loss.backward()
        tg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return step


def timed(step, batches, convert):
    losses, times = [], []
    for x, y in batches:
        x, y = convert(x), convert(y)
        t0 = time.perf_counter()
        loss = step(x, y)
        losses.append(float(loss.item()))
        times.append(time.perf_counter() - t0)
    return losses, times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--no-torch-compile", action="store_true")
    args = parser.parse_args()
    config = GPTConfig(block_size=64, vocab_size=103, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=True,
                       gelu_approximate="tanh")
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, config.vocab_size, (16, 64)), rng.integers(0, config.vocab_size, (16, 64)))
               for _ in range(args.steps + 5)]
    tg.manual_seed(0)
    ours = GPT(config)
    weights = {k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()}
    print(f"GPT {config.n_layer} layers x {config.n_embd}, {sum(p.numel() for p in ours.parameters()):,} parameters, "
          f"batch 16 x 64; torch {torch.__version__} with {torch.get_num_threads()} threads")

    runs = {}
    runs["tracegrad (numpy)"] = timed(tracegrad_step(ours, ours.configure_optimizers(0.1, 1e-3)), batches, tg.tensor)
    impls = [("torch eager", False)] + ([] if args.no_torch_compile else [("torch.compile", True)])
    for name, compile_it in impls:
        model = TorchGPT(config)
        model.load_state_dict(weights)
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=1e-3, betas=(0.9, 0.95))
        step = torch_step(model, opt)
        runs[name] = timed(torch.compile(step) if compile_it else step, batches, torch.tensor)

    base = runs["torch eager"][0]
    for name, (losses, _) in runs.items():
        np.testing.assert_allclose(losses[:3], base[:3], rtol=2e-4, err_msg=f"{name}: first losses differ from eager")
    eager_ms = statistics.median(runs["torch eager"][1][5:]) * 1e3
    print(f"{'impl':<20} {'first step':>11} {'ms/step':>9} {'vs eager':>9}   loss after {args.steps + 5} steps")
    for name, (losses, times) in runs.items():
        ms = statistics.median(times[5:]) * 1e3
        print(f"{name:<20} {times[0]:10.2f}s {ms:9.1f} {eager_ms / ms:8.2f}x   {losses[-1]:.4f}")
    print("(first step includes tracing/compiling; ratios: eager's time / this row's time)")


if __name__ == "__main__":
    main()
