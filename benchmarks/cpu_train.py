"""Training steps on the CPU, side by side in one run: tracegrad (compiled with the numpy backend, compiled
with the fused `cpu` backend, eager) against PyTorch eager and torch.compile, on the demo GPT (nanoGPT
names, tied head) and a small CNN, with the same weights and batches, at 1 and 2 threads each.

    python benchmarks/cpu_train.py                          # GPT 4 x 128, B16 T64; CNN on 32 x 1 x 28 x 28
    python benchmarks/cpu_train.py --steps 20 --no-torch-compile --threads 2

Each implementation runs forward, backward (GPT: gradient clipping) and an AdamW step; the first
losses are checked against PyTorch eager's before anything is timed. Times are medians over steps
after the first two (which include tracing and compiling); both libraries get the same thread
count (`torch.set_num_threads`, `tg.set_num_threads`). Steps are interleaved (step i of each
implementation, then step i + 1), so load from other jobs falls on all rows alike; still, compare
rows of one run, not runs, and pin the process (`taskset -c 1`) for the one-thread figures.
"""
from __future__ import annotations

import argparse
import os
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


class TorchCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x, y):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return F.cross_entropy(self.fc(x.reshape(x.shape[0], -1)), y)


class CNN(tg.nn.Module):
    """The same small CNN in tracegrad (MNIST-sized: two 3x3 convolutions, two max-pools, a linear head)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = tg.nn.Conv2d(1, 16, 3, padding=1), tg.nn.Conv2d(16, 32, 3, padding=1)
        self.fc = tg.nn.Linear(32 * 7 * 7, 10)
        self.pool = tg.nn.MaxPool2d(2)

    def forward(self, x, y):
        x = self.pool(tg.nn.functional.relu(self.c1(x)))
        x = self.pool(tg.nn.functional.relu(self.c2(x)))
        return None, tg.nn.functional.cross_entropy(self.fc(x.reshape(x.shape[0], -1)), y)


def torch_step(model, opt, clip):
    def step(x, y):
        loss = model(x, y)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()
    return step


def tracegrad_step(model, opt, clip, backend):
    def step(x, y):
        _, loss = model(x, y)
        loss.backward()
        if clip:
            tg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return step if backend == "eager" else tg.compile(step, backend=backend)


def interleaved(impls: dict, batches, steps: dict, may_fail=("torch.compile",)) -> dict:
    """{label: (losses, seconds per step)}: step i of every implementation runs before step i + 1 of
    any, so a change in the machine's load falls on all of them alike. An implementation in
    `may_fail` that raises (torch.compile without a C compiler) is reported and left out."""
    runs = {label: ([], []) for label in impls}
    for i, (x, y) in enumerate(batches):
        for label, (step, convert) in impls.items():
            if i >= steps[label] or label not in runs:
                continue
            xx, yy = convert(x), convert(y)
            t0 = time.perf_counter()
            try:
                loss = step(xx, yy)
                value = float(loss.item())
            except Exception as e:
                if label not in may_fail:
                    raise
                print(f"  {label} failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
                del runs[label]
                continue
            runs[label][1].append(time.perf_counter() - t0)
            runs[label][0].append(value)
    return runs


def torch_optimizer(model, decay_matrices):
    if not decay_matrices:
        return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=1e-3, betas=(0.9, 0.95))


def workloads(steps):
    rng = np.random.default_rng(0)
    config = GPTConfig(block_size=64, vocab_size=103, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=True,
                       gelu_approximate="tanh")
    gpt_batches = [(rng.integers(0, config.vocab_size, (16, 64)), rng.integers(0, config.vocab_size, (16, 64)))
                   for _ in range(steps)]
    cnn_batches = [(rng.normal(size=(32, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, (32,)))
                   for _ in range(steps)]

    def gpt():
        tg.manual_seed(0)
        ours = GPT(config)
        return ours, ours.configure_optimizers(0.1, 1e-3), lambda: TorchGPT(config)

    def cnn():
        tg.manual_seed(0)
        ours = CNN()
        return ours, tg.optim.AdamW(ours.parameters(), lr=1e-3, weight_decay=0.0), TorchCNN
    return [("GPT 4x128 B16 T64", gpt, gpt_batches, True), ("CNN B32 28x28", cnn, cnn_batches, False)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eager-steps", type=int, default=6, help="steps for tracegrad eager (slow)")
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--no-torch-compile", action="store_true")
    parser.add_argument("--only", choices=["gpt", "cnn"], default=None)
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"torch {torch.__version__}, numpy {np.__version__}")
    rows = []
    for name, make, batches, clip in workloads(args.steps):
        if args.only and not name.lower().startswith(args.only):
            continue
        for threads in args.threads:
            torch.set_num_threads(threads)
            tg.set_num_threads(threads)
            impls, steps = {}, {}
            for backend in ("numpy", "cpu", "eager"):
                ours, opt, torch_model = make()
                label = f"tracegrad {backend}" if backend == "eager" else f"tracegrad compiled ({backend})"
                impls[label] = (tracegrad_step(ours, opt, clip, backend), tg.tensor)
                steps[label] = args.eager_steps if backend == "eager" else args.steps
            weights = {k: torch.tensor(v.numpy()) for k, v in make()[0].state_dict().items()}
            for label, compile_it in [("torch eager", False)] + ([] if args.no_torch_compile else
                                                                 [("torch.compile", True)]):
                model = torch_model()
                model.load_state_dict(weights, strict=False)
                step = torch_step(model, torch_optimizer(model, clip), clip)
                impls[label], steps[label] = (torch.compile(step) if compile_it else step, torch.tensor), args.steps
            runs = interleaved(impls, batches, steps)
            base = runs["torch eager"][0]
            for label, (losses, _) in runs.items():
                np.testing.assert_allclose(losses[:3], base[:3], rtol=2e-4, err_msg=f"{label}: first losses differ")
            eager_ms = statistics.median(runs["torch eager"][1][2:]) * 1e3
            print(f"\n{name}, {threads} thread{'s' if threads > 1 else ''} (load {os.getloadavg()[0]:.1f})")
            print(f"  {'impl':<28} {'first step':>10} {'ms/step':>9} {'torch eager / this':>19}")
            for label, (losses, times) in runs.items():
                ms = statistics.median(times[2:]) * 1e3
                rows.append((name, threads, label, ms, eager_ms / ms))
                print(f"  {label:<28} {times[0]:9.2f}s {ms:9.1f} {eager_ms / ms:18.2f}x")
    print("\n(first step includes tracing and compiling; ratio > 1: faster than PyTorch eager)")


if __name__ == "__main__":
    main()
