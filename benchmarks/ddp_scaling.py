"""Data-parallel scaling on GPUs: GPT-2 124M, bf16 autocast, B=16 x T=1024 tokens per GPU, AdamW,
gradient clipping; tracegrad (`DistributedDataParallel` + `tg.compile`, NCCL) against PyTorch
(DDP + torch.compile, NCCL) on 1 and 2 GPUs, in one run.

    python benchmarks/ddp_scaling.py                     # both, 1 and 2 GPUs: tokens/s and scaling
    python benchmarks/ddp_scaling.py --gpus 1 2 --steps 20 --only tracegrad

Each configuration runs as its own job through `tracegrad launch -n N --gpus` (mpiexec; it sets
RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT and NCCL_NVLS_ENABLE=0, which PyTorch's env://
start-up reads too). A worker warms up (compile), then times `--steps` steps between CUDA
synchronizations; rank 0 prints one JSON line. Scaling = tokens/s on N GPUs / (N x tokens/s on 1).
To see the bucket all_reduces overlap the backward, run a worker under nsys:
`tracegrad launch -n 2 --gpus nsys profile -o ddp python benchmarks/ddp_scaling.py --worker tracegrad`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

B, T = 16, 1024


def worker_tracegrad(steps: int, warmup: int) -> dict:
    import cupy
    import tracegrad as tg
    from tracegrad.models.gpt import GPT, GPTConfig
    from tracegrad.nn.parallel import DistributedDataParallel as DDP
    tg.distributed.init_process_group("nccl")
    rank, world = tg.distributed.get_rank(), tg.distributed.get_world_size()
    device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
    tg.manual_seed(0)
    raw = GPT(GPTConfig(block_size=T, vocab_size=50304, n_layer=12, n_head=12, n_embd=768, dropout=0.0)).to(device)
    model = DDP(raw)
    opt = tg.optim.AdamW(raw.parameters(), lr=6e-4, weight_decay=0.1, betas=(0.9, 0.95))

    @tg.compile
    def step(x, y):
        with tg.autocast(tg.bfloat16):
            _, loss = model(x, y)
        loss.backward()
        tg.nn.utils.clip_grad_norm_(raw.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return loss

    x = tg.randint(0, 50304, (B, T)).to(device)
    y = tg.randint(0, 50304, (B, T)).to(device)
    for _ in range(warmup):
        loss = step(x, y)
    loss.item()
    cupy.cuda.Device().synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step(x, y)
    loss.item()
    cupy.cuda.Device().synchronize()
    dt = time.perf_counter() - t0
    return dict(rank=rank, world=world, tokens_per_s=B * T * world * steps / dt, ms_per_step=dt / steps * 1e3,
                loss=float(loss.item()))


def worker_torch(steps: int, warmup: int) -> dict:
    import torch
    import torch.distributed as dist
    sys.path.insert(0, os.path.dirname(__file__))
    from cpu_train import TorchGPT
    from tracegrad.models.gpt import GPTConfig
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    torch.manual_seed(0)
    torch.set_default_device("cuda")
    raw = TorchGPT(GPTConfig(block_size=T, vocab_size=50304, n_layer=12, n_head=12, n_embd=768, dropout=0.0))
    model = torch.nn.parallel.DistributedDataParallel(raw, device_ids=[local])
    opt = torch.optim.AdamW(raw.parameters(), lr=6e-4, weight_decay=0.1, betas=(0.9, 0.95), fused=True)
    fwd = torch.compile(model)

    def step(x, y):
        with torch.autocast("cuda", torch.bfloat16):
            loss = fwd(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(raw.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    x = torch.randint(0, 50304, (B, T))
    y = torch.randint(0, 50304, (B, T))
    for _ in range(warmup):
        step(x, y)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step(x, y)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    dist.destroy_process_group()
    return dict(rank=rank, world=world, tokens_per_s=B * T * world * steps / dt, ms_per_step=dt / steps * 1e3,
                loss=float(loss))


def run_job(impl: str, n: int, steps: int, warmup: int) -> dict | None:
    cmd = [sys.executable, "-m", "tracegrad", "launch", "-n", str(n), "--gpus", os.path.abspath(__file__),
           "--worker", impl, "--steps", str(steps), "--warmup", str(warmup)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        print(f"{impl} on {n} GPU(s) failed:\n{p.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", choices=["tracegrad", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--only", choices=["tracegrad", "torch"])
    args = ap.parse_args()
    if args.worker:
        out = (worker_tracegrad if args.worker == "tracegrad" else worker_torch)(args.steps, args.warmup)
        if out["rank"] == 0:
            print(json.dumps(out), flush=True)
        return
    results = {}
    for impl in [args.only] if args.only else ["tracegrad", "torch"]:
        for n in args.gpus:
            results[impl, n] = run_job(impl, n, args.steps, args.warmup)
    print(f"GPT-2 124M, bf16, B={B} x T={T} per GPU, {args.steps} timed steps")
    print(f"{'impl':<10} {'GPUs':>4} {'tokens/s':>12} {'ms/step':>9} {'scaling':>8}")
    for (impl, n), r in results.items():
        if r is None:
            print(f"{impl:<10} {n:>4} {'failed':>12}")
            continue
        one = results.get((impl, 1))
        scale = f"{r['tokens_per_s'] / (n * one['tokens_per_s']):.1%}" if one else "-"
        print(f"{impl:<10} {n:>4} {r['tokens_per_s']:>12,.0f} {r['ms_per_step']:>9.1f} {scale:>8}")
    for n in args.gpus:
        a, b = results.get(("tracegrad", n)), results.get(("torch", n))
        if a and b:
            print(f"tracegrad / PyTorch on {n} GPU(s): {a['tokens_per_s'] / b['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
