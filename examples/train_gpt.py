"""Train a small character-level GPT with tracegrad on the CPU: the main job (`make demo`).

The default corpus is the text of Python's own reference documentation (`pydoc_data.topics`, part
of every CPython install), so nothing is downloaded. One `@tg.compile`d function holds the whole
training step: forward, backward, gradient clipping, the AdamW update and zero_grad.

    python examples/train_gpt.py                      # defaults: a few minutes on 2 CPU cores
    python examples/train_gpt.py --steps 3000 --data my.txt
    python examples/train_gpt.py --resume --steps 3000  # continue from out/train_gpt/ckpt.safetensors
    python examples/train_gpt.py --dump-ir ir_dump    # every IR stage and the generated numpy source
    python examples/generate.py --prompt "for"        # sample from the checkpoint
    tracegrad launch -n 2 examples/train_gpt.py       # data parallel: two ranks, each half of every batch

Writes to --out (default out/train_gpt): ckpt.safetensors (model, AdamW state, step, RNG, data
position), loss.png, sample.txt, data/{train,val}.bin + meta.json (the tokenized corpus).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time

import numpy as np

import tracegrad as tg
from tracegrad.models import GPT, GPTConfig, generate
from tracegrad.nn.parallel import DistributedDataParallel
from tracegrad.utils.checkpoint import load_checkpoint, save_checkpoint
from tracegrad.utils.token_dataset import TokenDataset, prepare_token_files
from tracegrad.utils.tokenizers import BPETokenizer, CharTokenizer


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--data", default=None, help="a UTF-8 text file (default: Python's pydoc_data.topics)")
    a("--out", default="out/train_gpt", help="output folder")
    a("--tokenizer", default="char", choices=["char", "bpe"])
    a("--vocab-size", type=int, default=512, help="for --tokenizer bpe")
    a("--steps", type=int, default=1500, help="optimizer steps in total (resume continues up to this)")
    a("--batch-size", type=int, default=16)
    a("--block-size", type=int, default=64)
    a("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    a("--n-layer", type=int, default=4)
    a("--n-head", type=int, default=4)
    a("--n-embd", type=int, default=128)
    a("--dropout", type=float, default=0.0)
    a("--attention", default="sdpa", choices=["sdpa", "masked"],
      help="F.scaled_dot_product_attention or masked_fill + softmax")
    a("--gelu", default="tanh", choices=["tanh", "none"], help="GELU approximation (tanh: GPT-2's, faster than erf)")
    a("--lr", type=float, default=2e-3)
    a("--min-lr", type=float, default=2e-4)
    a("--warmup", type=int, default=100)
    a("--weight-decay", type=float, default=0.1)
    a("--beta2", type=float, default=0.99)
    a("--grad-clip", type=float, default=1.0)
    a("--eval-interval", type=int, default=250)
    a("--eval-iters", type=int, default=16, help="batches per split per evaluation")
    a("--seed", type=int, default=1337)
    a("--sample-tokens", type=int, default=400)
    a("--temperature", type=float, default=0.8)
    a("--top-k", type=int, default=None)
    a("--resume", action="store_true", help="continue from OUT/ckpt.safetensors")
    a("--dump-ir", default=None, metavar="DIR", help="write every IR stage and the generated source to DIR")
    a("--no-compile", action="store_true", help="run the step eagerly (slow; for comparison)")
    return p.parse_args(argv)


def load_corpus(path):
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read(), os.path.basename(path)
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k] for k in sorted(topics)), "pydoc_data.topics"


def prepare_data(args, text):
    """Tokenize the corpus once into OUT/data (redone when the text or tokenizer changes)."""
    folder = os.path.join(args.out, "data")
    key = hashlib.sha256(f"{args.tokenizer}:{args.vocab_size}:".encode() + text.encode()).hexdigest()[:16]
    stamp = os.path.join(folder, "key.txt")
    if not (os.path.exists(stamp) and open(stamp).read() == key):
        t0 = time.perf_counter()
        tok = CharTokenizer.train(text) if args.tokenizer == "char" else BPETokenizer.train(text, args.vocab_size)
        prepare_token_files(text, tok, folder, val_fraction=0.1)
        with open(stamp, "w") as f:
            f.write(key)
        print(f"tokenized with a {args.tokenizer} tokenizer ({tok.vocab_size} tokens) "
              f"in {time.perf_counter() - t0:.1f} s")
    return TokenDataset(folder, args.block_size, args.batch_size, seed=args.seed)


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    # under `tracegrad launch -n N`: one rank per process, each on its share of every batch
    tg.distributed.init_process_group("gloo")
    rank, world = tg.distributed.get_rank(), tg.distributed.get_world_size()
    if rank != 0:
        sys.stdout = open(os.devnull, "w")       # rank 0 reports for everyone
    os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, "ckpt.safetensors")
    text, source = load_corpus(args.data)
    if rank != 0:
        tg.distributed.barrier()                 # rank 0 tokenizes and writes the data files first
    ds = prepare_data(args, text)
    if rank == 0 and world > 1:
        tg.distributed.barrier()
    tok = ds.tokenizer()
    n_train, n_val = ds.meta["n_tokens"]["train"], ds.meta["n_tokens"]["val"]
    print(f"corpus: {source}, {len(text):,} characters -> {n_train:,} train / {n_val:,} val tokens, "
          f"vocab {tok.vocab_size}")

    tg.manual_seed(args.seed)
    config = GPTConfig(block_size=args.block_size, vocab_size=tok.vocab_size, n_layer=args.n_layer, n_head=args.n_head,
                       n_embd=args.n_embd, dropout=args.dropout, bias=True, flash=args.attention == "sdpa",
                       gelu_approximate=args.gelu)
    model = GPT(config)
    print(model.summary())
    opt = model.configure_optimizers(args.weight_decay, args.lr, betas=(0.9, args.beta2))
    sched = tg.optim.lr_scheduler.WarmupCosineLR(opt, warmup_iters=args.warmup, lr_decay_iters=args.steps,
                                                 min_lr=args.min_lr)
    history = {"step": [], "loss": [], "eval": []}
    start = 0
    if args.resume:
        state = load_checkpoint(ckpt_path, model=model, optimizer=opt, scheduler=sched)
        ds.load_state_dict(state["data_state"])
        start, history = state["step"], state["extra"]["history"]
        sched.lr_decay_iters = args.steps        # --steps may have grown since the checkpoint
        print(f"resumed from {ckpt_path} at step {start}")

    # -- the compiled steps ----------------------------------------------------------------------
    accum = args.grad_accum
    ddp = DistributedDataParallel(model) if world > 1 else model    # gradients averaged over the ranks

    def train_step(x, y):                      # x, y: i64[accum, B, T], this rank's rows
        total = 0.0
        for micro in range(accum):             # unrolled at trace time: one graph for all micro-steps
            _, loss = ddp(x[micro], y[micro])
            (loss / accum).backward()
            total = total + loss.detach() / accum
        tg.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return total

    def eval_step(x, y):
        return model(x, y)[1]

    if args.dump_ir:    # every compiled step writes its stages there: train, eval and the sampler's decode step
        os.environ["TRACEGRAD_DUMP"] = args.dump_ir
    if not args.no_compile:
        train_step = tg.compile(train_step)
        eval_step = tg.compile(eval_step)

    def batch():
        # every rank reads the same global batches and keeps its own (DDP's semantics)
        xs, ys = zip(*([ds.get_batch_numpy("train") for _ in range(world)][rank] for _ in range(accum)))
        return tg.tensor(np.stack(xs)), tg.tensor(np.stack(ys))

    def evaluate():
        model.eval()
        out = {}
        with tg.no_grad():
            for split in ("train", "val"):      # the same held-out batches every time (k >= 2**40)
                losses = [eval_step(*ds.get_batch(split, k=2**40 + i)).item() for i in range(args.eval_iters)]
                out[split] = sum(losses) / len(losses)
        model.train()
        return out

    unigram = ds.unigram_loss("val")
    print(f"baselines on val: uniform ln(V) = {math.log(tok.vocab_size):.3f}, unigram = {unigram:.3f} nats/token")

    # -- the loop ---------------------------------------------------------------------------------
    from tqdm import tqdm
    tokens_per_step = accum * args.batch_size * args.block_size * world
    t_loop, t_compile, timed_steps, timed_s = time.perf_counter(), None, 0, 0.0
    bar = tqdm(total=args.steps, initial=start, unit="step", dynamic_ncols=True, mininterval=1.0, file=sys.stdout,
               disable=rank != 0)
    for it in range(start, args.steps):
        if it % args.eval_interval == 0:
            ev = evaluate()
            history["eval"].append([it, ev["train"], ev["val"]])
            bar.write(f"step {it:5d}: train {ev['train']:.4f}, val {ev['val']:.4f}")
        x, y = batch()
        t0 = time.perf_counter()
        loss = train_step(x, y).item()
        dt = time.perf_counter() - t0
        sched.step()
        if t_compile is None:
            t_compile = dt                       # the first call traces and compiles
        else:
            timed_steps, timed_s = timed_steps + 1, timed_s + dt
        history["step"].append(it)
        history["loss"].append(loss)
        tps = tokens_per_step * timed_steps / timed_s if timed_s else 0.0
        bar.set_postfix_str(f"loss {loss:.3f} | {tps:,.0f} tok/s | lr {sched.get_last_lr()[0]:.1e}", refresh=False)
        bar.update(1)
    bar.close()
    train_s = time.perf_counter() - t_loop
    final = evaluate()
    history["eval"].append([args.steps, final["train"], final["val"]])

    save_checkpoint(ckpt_path, model=model, optimizer=opt, scheduler=sched, step=args.steps,
                    data_state=ds.state_dict(), extra={"history": history, "config": vars(config),
                                                       "tokenizer": tok.to_dict(), "args": vars(args)})
    if rank != 0:
        return final
    plot(history, unigram, os.path.join(args.out, "loss.png"))

    prompt = tg.tensor([tok.encode("\n")])
    t0 = time.perf_counter()
    out = generate(model, prompt, max_new_tokens=args.sample_tokens, temperature=args.temperature, top_k=args.top_k)
    sample_s = time.perf_counter() - t0
    sample = tok.decode(out[0].tolist())
    with open(os.path.join(args.out, "sample.txt"), "w", encoding="utf-8") as f:
        f.write(sample)

    # -- report -----------------------------------------------------------------------------------
    print(f"\n--- sample ({args.sample_tokens} tokens, {sample_s:.1f} s) ---\n{sample.strip()}\n---")
    if timed_steps:
        print(f"training: {args.steps - start} steps in {train_s:.1f} s (first step incl. compile {t_compile:.2f} s), "
              f"{timed_s / timed_steps * 1e3:.1f} ms/step, {tokens_per_step * timed_steps / timed_s:,.0f} tokens/s")
    print(f"final loss: train {final['train']:.4f}, val {final['val']:.4f} nats/token | "
          f"unigram baseline {unigram:.4f}, uniform {math.log(tok.vocab_size):.4f}")
    print(f"wrote {ckpt_path}, {os.path.join(args.out, 'loss.png')}, {os.path.join(args.out, 'sample.txt')}"
          + (f", IR dumps in {args.dump_ir}/" if args.dump_ir else ""))
    print(f"total time {time.perf_counter() - t_start:.1f} s")
    return final


def plot(history, unigram, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    steps, loss = history["step"], history["loss"]
    ax.plot(steps, loss, lw=0.6, alpha=0.35, color="C0", label="train (per step)")
    k = 25
    if len(loss) > k:   # moving average
        smooth = [sum(loss[i - k:i]) / k for i in range(k, len(loss) + 1)]
        ax.plot(steps[k - 1:], smooth, color="C0", label=f"train ({k}-step mean)")
    if history["eval"]:
        ev = list(zip(*history["eval"]))
        ax.plot(ev[0], ev[2], "o-", color="C1", label="val")
    ax.axhline(unigram, ls="--", color="gray", label=f"unigram baseline ({unigram:.2f})")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("tracegrad: character-level GPT")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
