"""A whole training step on the GPU: tracegrad's `tg.compile` against PyTorch eager and
torch.compile, each in its own process (GPT-2 124M or a LLaMA-shaped model of similar size,
bf16 autocast, AdamW, B=16, T=1024, with and without clip_grad_norm_).

    python benchmarks/gpt2_step.py                          # GPT-2, every implementation, clip on
    python benchmarks/gpt2_step.py --model llama --no-clip
    python benchmarks/gpt2_step.py --impl tracegrad --steps 20

Each implementation runs twice in fresh processes sharing a fresh cache folder (tracegrad's
kernels, Triton's and Inductor's caches): the first process's first call is the cold
first-call time, the second's the warm one. The first process then times `--steps` steps after
`--warmup` more (wall clock between device synchronizations, median of per-step times), and
reads peak device memory over one step: torch's allocator statistics, CuPy's pool through a
memory hook for tracegrad (parameters, optimizer state and gradients included in both).
MFU counts 6N + 12 L H D T FLOPs per token against the H100/H200 dense bf16 peak, 989 TFLOP/s.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

PEAK_FLOPS = 989e12
HERE = os.path.dirname(os.path.abspath(__file__))


# -- one implementation, in its own process ------------------------------------------------------------
def _tracegrad(args):
    import cupy
    import numpy as np
    import tracegrad as tg
    if args.model == "gpt2":
        from tracegrad.models.gpt import GPT, GPTConfig
        model = GPT(GPTConfig(block_size=args.T, vocab_size=50304, n_layer=12, n_head=12, n_embd=768, dropout=0.0))
        shape, vocab = (12, 12, 64), 50304
    else:
        from tracegrad.models.llama import Llama, LlamaConfig
        model = Llama(LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                                  num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=args.T))
        shape, vocab = (12, 12, 64), 32000
    model.to("cuda")
    params = [p for p in model.parameters()]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    opt = tg.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                         lr=3e-4, betas=(0.9, 0.95))

    @tg.compile
    def step(x, y):
        with tg.autocast(tg.bfloat16):
            _, loss = model(x, y)
        loss.backward()
        if args.clip:
            tg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return loss
    rng = np.random.default_rng(0)
    x = tg.tensor(rng.integers(0, vocab, (args.B, args.T))).to("cuda")
    y = tg.tensor(rng.integers(0, vocab, (args.B, args.T))).to("cuda")
    n_params = sum(p.numel() for p in params)
    sync = cupy.cuda.get_current_stream().synchronize
    out = _time(lambda: step(x, y), sync, args, lambda: float(step(x, y).item()))
    if args.first_only:
        return out
    graphed = getattr(step.entries[-1].program, "graphed", None)
    held = (lambda: graphed.platform.pool.total_bytes()) if graphed is not None and graphed.active else (lambda: 0)
    peak = _cupy_peak(lambda: step(x, y), sync, held)
    if args.profile:
        _profile(lambda: step(x, y), sync)
        step.profile(x, y)      # tracegrad's own per-launch times (CUDA events), shown by explain()
    if args.explain or args.profile:
        text = step.explain()
        print(text if args.explain else "\n".join(ln for ln in text.splitlines()[:24]))
    return dict(out, peak_gib=peak, graph_pool_gib=held() / 2**30, n_params=n_params, shape=shape,
                module=os.path.dirname(tg.__file__))


def _profile(fn, sync, rows=45) -> None:
    """The device kernels of two steps by total time (torch's profiler reads CUPTI, so it sees
    kernels launched through Triton and CuPy too)."""
    import torch.profiler as tp
    sync()
    with tp.profile(activities=[tp.ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            fn()
        sync()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=70))
    try:
        print(_idle(prof))
    except AttributeError as e:     # NOTE: the profiler's event fields differ across PyTorch versions
        print(f"device: idle time not read ({e})")


def _idle(prof, gap_us: float = 5.0) -> str:
    """How long the device sat idle between the first and the last kernel of the profiled steps:
    host work the device waits for (a step's start, copies in and out) and launch gaps."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                   if e.device_type.name == "CUDA" and e.time_range.end > e.time_range.start)
    if not spans:
        return "device: no kernels seen"
    busy, gaps, end = 0.0, [], spans[0][0]
    for a, b in spans:
        if a > end:
            gaps.append(a - end)
        busy += max(0.0, b - max(a, end))
        end = max(end, b)
    span = end - spans[0][0]
    big = [g for g in gaps if g > gap_us]
    return (f"device: busy {busy / 1e3:.2f} ms of {span / 1e3:.2f} ms; idle {(span - busy) / 1e3:.2f} ms, "
            f"{sum(big) / 1e3:.2f} ms of it in {len(big)} gaps over {gap_us:.0f} us "
            f"(largest {max(gaps, default=0) / 1e3:.2f} ms), {len(gaps) - len(big)} shorter gaps")


def _cupy_peak(fn, sync, held=lambda: 0) -> float:
    """GiB in CuPy's pool at the most during one call after the first (what is live before it included),
    plus `held()`: bytes kept outside that pool (a CUDA graph's own pool)."""
    import cupy
    from cupy.cuda import memory_hook

    class Peak(memory_hook.MemoryHook):
        name = "peak"

        def __init__(self):
            self.now = self.top = cupy.get_default_memory_pool().used_bytes()

        def malloc_postprocess(self, device_id, size, mem_size, mem_ptr, pmem_id):
            self.now += mem_size
            self.top = max(self.top, self.now)

        def free_postprocess(self, device_id, mem_size, mem_ptr, pmem_id):
            self.now -= mem_size
    sync()
    hook = Peak()
    with hook:
        fn()
        sync()
    return (hook.top + held()) / 2**30


def _torch(args, compiled):
    import torch
    sys.path.insert(0, HERE)
    import torch_models
    torch.manual_seed(0)
    model = (torch_models.GPT(T=args.T) if args.model == "gpt2" else torch_models.Llama(T=args.T)).cuda()
    vocab = 50304 if args.model == "gpt2" else 32000
    params = list(model.parameters())
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), fused=True)
    fwd = torch.compile(model) if compiled else model

    def step(x, y):
        with torch.autocast("cuda", torch.bfloat16):
            loss = fwd(x, y)
        loss.backward()
        if args.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    x = torch.randint(0, vocab, (args.B, args.T), device="cuda")
    y = torch.randint(0, vocab, (args.B, args.T), device="cuda")
    n_params = sum(p.numel() for p in params)
    out = _time(lambda: step(x, y), torch.cuda.synchronize, args, lambda: float(step(x, y).item()))
    if args.first_only:
        return out
    torch.cuda.reset_peak_memory_stats()
    step(x, y)
    torch.cuda.synchronize()
    if args.profile:
        _profile(lambda: step(x, y), torch.cuda.synchronize)
    return dict(out, peak_gib=torch.cuda.max_memory_allocated() / 2**30, n_params=n_params, shape=(12, 12, 64))


def _time(fn, sync, args, loss) -> dict:
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    if args.first_only:
        return dict(first_s=first)
    for _ in range(args.warmup):
        fn()
    sync()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    times.sort()
    return dict(first_s=first, step_ms=1e3 * times[len(times) // 2], loss=loss())


def child(args) -> None:
    t0 = time.perf_counter()
    out = _tracegrad(args) if args.child == "tracegrad" else _torch(args, args.child == "torch.compile")
    out["process_s"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(out), flush=True)


# -- the parent: every implementation, cold and warm, and the table -------------------------------------
def run_child(impl, args, cache, first_only) -> dict:
    env = dict(os.environ, TRACEGRAD_CACHE_DIR=os.path.join(cache, "tg"), TRITON_CACHE_DIR=os.path.join(cache, "triton"),
               TORCHINDUCTOR_CACHE_DIR=os.path.join(cache, "inductor"), PYTHONUNBUFFERED="1")
    if impl == "tracegrad-base":    # another tracegrad (an install of an older commit) for a before/after
        env["PYTHONPATH"] = args.base + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", impl.split("-")[0], "--model", args.model, "--B", str(args.B),
           "--T", str(args.T), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--clip" if args.clip else "--no-clip"] + (["--first-only"] if first_only else [])
    cmd += ["--explain"] if args.explain and not first_only else []
    cmd += ["--profile"] if args.profile and not first_only else []
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        sys.stderr.write(f"{impl}: no result in {args.timeout} s\n")
        return {}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            if args.explain or args.profile:
                print(f"# --- {impl} ---\n" + "\n".join(ln for ln in p.stdout.splitlines() if not ln.startswith("RESULT ")))
            return json.loads(line[7:])
    sys.stderr.write(f"{impl} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}\n")
    return {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["gpt2", "llama"], default="gpt2")
    ap.add_argument("--impl", action="append", choices=["tracegrad", "tracegrad-base", "eager", "torch.compile"])
    ap.add_argument("--base", help="tracegrad-base: a folder holding another tracegrad install (pip --target)")
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--clip", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--warm", action="append", help="implementations to time a warm-cache first call of "
                    "(default: all)")
    ap.add_argument("--explain", action="store_true", help="print tracegrad's step.explain()")
    ap.add_argument("--profile", action="store_true", help="print each implementation's kernels by device time")
    ap.add_argument("--timeout", type=int, default=500)
    ap.add_argument("--json", help="append the rows to this file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--first-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.impl = args.impl or ["tracegrad", "eager", "torch.compile"]
    if args.child:
        return child(args)
    rows = {}
    for impl in args.impl:
        with tempfile.TemporaryDirectory() as cache:
            r = run_child(impl, args, cache, first_only=False)
            if r and (args.warm is None or impl in args.warm):
                r["warm_first_s"] = run_child(impl, args, cache, first_only=True).get("first_s")
        rows[impl] = r
        print(f"# {impl}: {r}", flush=True)
    table(rows, args)


def table(rows, args) -> None:
    ref = rows.get("torch.compile", {}).get("step_ms")
    eager = rows.get("eager", {}).get("step_ms")
    tokens = args.B * args.T
    print(f"\n{args.model} B={args.B} T={args.T} bf16 AdamW clip={'on' if args.clip else 'off'}")
    print(f"{'impl':<15}{'step ms':>9}{'tokens/s':>10}{'MFU':>7}{'cold 1st s':>11}{'warm 1st s':>11}"
          f"{'peak GiB':>9}{'loss':>8}{'vs eager':>9}{'vs compile':>11}")
    for impl, r in rows.items():
        if not r.get("step_ms"):
            print(f"{impl:<15}  failed")
            continue
        ms = r["step_ms"]
        L, H, D = r["shape"]
        from torch_models import flops_per_token
        mfu = flops_per_token(r["n_params"], L, H, D, args.T) * tokens / (ms / 1e3) / PEAK_FLOPS
        warm = r.get("warm_first_s")
        print(f"{impl:<15}{ms:>9.1f}{tokens / ms * 1e3 / 1e3:>9.0f}k{100 * mfu:>6.1f}%{r['first_s']:>11.1f}"
              f"{warm if warm is not None else float('nan'):>11.1f}{r['peak_gib']:>9.2f}{r['loss']:>8.3f}"
              f"{(eager or float('nan')) / ms:>8.2f}x{(ref or float('nan')) / ms:>10.2f}x")
    print("(ratios: the other's step time / this row's; above 1 means this row is faster)")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(dict(model=args.model, clip=args.clip, rows=rows)) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    main()
