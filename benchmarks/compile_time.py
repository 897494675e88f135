"""Where the first call of a compiled training step goes: the time of each compile phase of the
GPT-2 124M bf16 step (AdamW, clip_grad_norm_) on the Triton backend, cold cache and warm.

    python benchmarks/compile_time.py                                   # CPU: B=1, T=64, 3 repeats
    python benchmarks/compile_time.py --device cuda --B 16 --T 1024     # the GPU benchmark's step
    python benchmarks/compile_time.py --model llama --repeats 5

The graph of the step does not depend on B and T, so on the CPU a small batch costs every pass
and code generator what the GPU step costs them; the CPU run stops once the program is built
(interpreting the kernels is not part of compiling). On CUDA the first call runs whole, so
"launch" holds what Triton compiles at the first launch (templates, autotuning) and the step itself.

Each repeat runs two fresh processes on one fresh cache folder (tracegrad's kernels and Triton's
binaries): the first is the cold first call, the second the warm one. Medians over the repeats.
Phases: traced (tracing, autodiff, optimizer; includes creating optimizer state), simplify,
decompose, optimized, fused (the passes), generate (Triton sources and host function), load
(kernel modules, `@triton.jit`), host (the host function), precompile (CUDA only, at the first call: a
dry run of the host function finds every launch, templates too, and worker processes compile each
distinct kernel), launch (the rest of the first call). The CPU columns are this process's
CPU time (what a loaded machine stretches least), per pass and for codegen as a whole
(generate + load + host; the compile workers' CPU time is their own).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PHASES = ("traced", "simplify", "decompose", "optimized", "fused", "generate", "load", "host", "precompile",
          "launch")


def child(args) -> dict:
    t0 = time.perf_counter()
    import numpy as np
    import tracegrad as tg
    from tracegrad.runtime import kernel_cache
    out = {"import_s": time.perf_counter() - t0}
    if args.model == "gpt2":
        from tracegrad.models.gpt import GPT, GPTConfig
        model, vocab = GPT(GPTConfig(block_size=args.T, vocab_size=50304, n_layer=12, n_head=12, n_embd=768)), 50304
    else:
        from tracegrad.models.llama import Llama, LlamaConfig
        model = Llama(LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                                  num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=args.T))
        vocab = 32000
    if args.device == "cuda":
        model.to("cuda")
    params = list(model.parameters())
    opt = tg.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                          {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                         lr=3e-4, betas=(0.9, 0.95))

    @tg.compile(backend="triton")
    def step(x, y):
        with tg.autocast(tg.bfloat16):
            _, loss = model(x, y)
        loss.backward()
        tg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return loss
    rng = np.random.default_rng(0)
    x, y = (tg.tensor(rng.integers(0, vocab, (args.B, args.T))) for _ in range(2))
    if args.device == "cuda":
        import cupy
        x, y = x.to("cuda"), y.to("cuda")
        sync = cupy.cuda.get_current_stream().synchronize
    else:
        from tracegrad.compiled_entry import Entry
        Entry.run = lambda self, leaves: None      # compile only: the interpreter would run the kernels
        sync = lambda: None     # noqa: E731
    cpu = _cpu_clocks()
    t0, c0 = time.perf_counter(), time.process_time()
    step(x, y)
    sync()
    out["first_s"], out["first_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    e = step.entries[-1]
    ms = {s.name: s.ms for s in e.stages.stages}
    ms.update(getattr(e.program, "compile_ms", {}))
    ms["launch"] = out["first_s"] * 1e3 - sum(ms.values())
    cpu["traced"] = out["first_cpu_s"] * 1e3 - sum(cpu.values())
    kernels = e.program.generated.kernels
    out["compiled_ahead"] = getattr(e.program, "compile_counts", None)
    out.update(ms=ms, cpu_ms=cpu, launches=len(kernels), distinct=len({k.key for k in kernels}), cache=dict(kernel_cache.stats),
               nodes={s.name: len(s.graph.nodes) for s in e.stages.stages})
    return out


def _cpu_clocks() -> dict:
    """Phase -> CPU ms of this process (a loaded machine stretches wall times, hardly these): each
    pass of the pipeline, and codegen (building the program); "traced" is the rest of the first call."""
    from tracegrad import pipeline
    from tracegrad.ir.passes import manager
    cpu, run, codegen = {}, manager.PassManager.run, pipeline.codegen

    def timed_run(self, name, fn, graph):
        c = time.process_time()
        try:
            return run(self, name, fn, graph)
        finally:
            cpu[name] = cpu.get(name, 0.0) + (time.process_time() - c) * 1e3

    def timed_codegen(*a, **k):
        c = time.process_time()
        try:
            return codegen(*a, **k)
        finally:
            cpu["codegen"] = (time.process_time() - c) * 1e3
    manager.PassManager.run, pipeline.codegen = timed_run, timed_codegen
    return cpu


def run_child(args, cache: str) -> dict:
    env = dict(os.environ, TRACEGRAD_CACHE_DIR=os.path.join(cache, "tg"), TRITON_CACHE_DIR=os.path.join(cache, "triton"),
               PYTHONUNBUFFERED="1")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--model", args.model, "--device", args.device,
           "--B", str(args.B), "--T", str(args.T)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"child failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("gpt2", "llama"), default="gpt2")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when CuPy sees a GPU")
    ap.add_argument("--B", type=int, default=None, help="default: 1 on the CPU, 16 on CUDA")
    ap.add_argument("--T", type=int, default=None, help="default: 64 on the CPU, 1024 on CUDA")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--json", help="write every run's numbers here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.device is None:
        try:
            import cupy
            args.device = "cuda" if cupy.cuda.runtime.getDeviceCount() > 0 else "cpu"
        except Exception:
            args.device = "cpu"
    args.B = args.B or (16 if args.device == "cuda" else 1)
    args.T = args.T or (1024 if args.device == "cuda" else 64)
    if args.child:
        print(json.dumps(child(args)))
        return
    runs = {"cold": [], "warm": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            runs["cold"].append(run_child(args, cache))
            runs["warm"].append(run_child(args, cache))
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    first = runs["cold"][0]
    print(f"{args.model} B={args.B} T={args.T} on {args.device}: {first['nodes'].get('traced')} traced ops, "
          f"{first['launches']} kernel launches of {first['distinct']} distinct kernels; medians of {args.repeats}; "
          f"load average {' '.join(f'{x:.2f}' for x in load)}")
    print(f"{'phase':<12}{'cold ms':>10}{'warm ms':>10}{'cold cpu':>10}{'warm cpu':>10}")
    for ph in PHASES + ("codegen",):
        vals = [statistics.median(r[m].get(ph, 0.0) for r in runs[k]) for m in ("ms", "cpu_ms") for k in ("cold", "warm")]
        if any(abs(v) >= 0.05 for v in vals):
            print(f"{ph:<12}" + "".join(f"{v:>10.0f}" if v else f"{'':>10}" for v in vals))
    for key, what in (("first_s", "first call s"), ("first_cpu_s", "  its CPU s"), ("import_s", "import s")):
        vals = [statistics.median(r[key] for r in runs[k]) for k in ("cold", "warm")]
        print(f"{what:<12}{vals[0]:>10.2f}{vals[1]:>10.2f}")
    ahead = [r.get("compiled_ahead") for r in runs["cold"] if r.get("compiled_ahead")]
    if ahead:
        for kind in ("cold", "warm"):
            a = runs[kind][0]["compiled_ahead"]
            print(f"compiled before the first launch ({kind}): {a['kernels']} kernels, {a['in_workers']} of them by "
                  f"worker processes; dry run {a['dry_ms']:.0f} ms, workers {a['workers_ms']:.0f} ms, "
                  f"loading {a['load_ms']:.0f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(vars(args), runs=runs, load=load), f, indent=1)


if __name__ == "__main__":
    main()
