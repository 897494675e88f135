"""Tokens/s and memory per GPU of each parallel plan on a LLaMA of about 1B parameters
(TinyLlama-1.1B's shape: 22 layers, 2048 wide, 32 heads, 4 kv heads, 32000 words), two GPUs.

    python benchmarks/parallel.py                    # every plan on 2 GPUs (and 1 GPU where it fits)
    python benchmarks/parallel.py --plans tp2 pp2 --steps 5 --seq 1024
    python benchmarks/parallel.py --smoke            # a tiny LLaMA on CPU thread ranks: checks the script

Each plan trains the same model from the same weights (AdamW, fp32 master weights, bf16 autocast
unless --fp32) on the same batches; the loss of its first step is printed beside the single-GPU
one. Ranks are threads of this process, rank r on cuda:r (tracegrad.distributed.run_local; the
thread communicator moves CuPy arrays between the GPUs by peer copies, so the collectives are
slower than NCCL's would be).
Times are medians over the steps after the first (which compiles). Memory is the CuPy pool's
bytes in use per GPU after the last step.

NOTE: parameters and optimizer state are held whole on every rank in this version (the passes
split the compute and activations, then all-gather the updated state), so memory per GPU falls
with the activations only; the figures say how far that goes.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np

import tracegrad as tg
from tracegrad.models.llama import Llama, LlamaConfig

PLANS = {"single": tg.Mesh(), "dp2": tg.Mesh(dp=2), "tp2": tg.Mesh(tp=2), "pp2": tg.Mesh(pp=2),
         "cp2": tg.Mesh(cp=2)}
ONE_B = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
             num_key_value_heads=4, max_position_embeddings=2048)
TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)


def _device(rank: int, smoke: bool) -> str:
    if smoke:
        return "cpu"
    import cupy
    cupy.cuda.Device(rank).use()
    return f"cuda:{rank}"


def run_plan(name, rank, model, batches, args):
    mesh = PLANS[name]
    dev = _device(rank, args.smoke)
    model = model.to(dev)
    opt = tg.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = None if args.fp32 or args.smoke else tg.bfloat16

    def train_step(x, y):
        if dtype is None:
            _, loss = model(x, y)
        else:
            with tg.autocast(dtype):
                _, loss = model(x, y)
        loss.backward()
        tg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return loss

    step = tg.compile(train_step, mesh=mesh if mesh.size > 1 else None, microbatches=args.microbatches,
                      schedule=args.schedule)
    losses, times = [], []
    for x, y in batches:
        t0 = time.perf_counter()
        loss = float(step(tg.tensor(x, device=dev), tg.tensor(y, device=dev)).item())
        times.append(time.perf_counter() - t0)
        losses.append(loss)
    mem = 0
    if not args.smoke:
        import cupy
        mem = cupy.get_default_memory_pool().used_bytes()
    return losses, times, mem


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plans", nargs="*", default=list(PLANS))
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--microbatches", type=int, default=4)
    p.add_argument("--schedule", default="1f1b", choices=["1f1b", "afab"])
    p.add_argument("--fp32", action="store_true")
    p.add_argument("--smoke", action="store_true", help="a tiny LLaMA on CPU thread ranks")
    args = p.parse_args()
    cfg = LlamaConfig(**(TINY if args.smoke else ONE_B))
    seq = min(args.seq, cfg.max_position_embeddings) if args.smoke else args.seq
    tg.manual_seed(0)
    model = Llama(cfg)
    n_params = sum(int(np.prod(t.shape)) for t in model.parameters())
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, cfg.vocab_size, (args.batch, seq)), rng.integers(0, cfg.vocab_size, (args.batch, seq)))
               for _ in range(args.steps)]
    tokens = args.batch * seq
    print(f"LLaMA {n_params / 1e9:.2f}B params, batch {args.batch} x {seq} tokens, {args.steps} steps, "
          f"{'fp32' if args.fp32 or args.smoke else 'bf16 autocast'}")
    print(f"{'plan':<8} {'GPUs':>4} {'loss[0]':>9} {'step ms':>9} {'tokens/s':>10} {'GiB per GPU':>12}")
    for name in args.plans:
        mesh = PLANS[name]
        try:
            runs = tg.distributed.run_local(lambda r, m: run_plan(name, r, m, batches, args), mesh.size,
                                            [(copy.deepcopy(model),) for _ in range(mesh.size)])
        except Exception as e:      # out of memory on one GPU, say: report and go on
            print(f"{name:<8} {mesh.size:>4}  failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}")
            continue
        ms = statistics.median(max(r[1][i] for r in runs) for i in range(1, len(batches))) * 1e3 \
            if len(batches) > 1 else runs[0][1][0] * 1e3
        mem = " ".join(f"{r[2] / 2**30:.1f}" for r in runs)
        loss = np.mean([runs[mesh.rank_of(dp=d)][0][0] for d in range(mesh.dp)])   # dp: each rank's rows
        print(f"{name:<8} {mesh.size:>4} {loss:>9.4f} {ms:>9.1f} {tokens / ms * 1e3:>10.0f} {mem:>12}")


if __name__ == "__main__":
    main()
