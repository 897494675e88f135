"""Train a small character-level GPT with tracegrad on the CPU: the main job (`make demo`).

The default corpus is the text of Python's own reference documentation (`pydoc_data.topics`, part
of every CPython install), so nothing is downloaded. One `@tg.compile`d function holds the whole
training step: forward, backward, gradient clipping, the AdamW update and zero_grad.

    .venv/bin/python examples/train_gpt.py                      # defaults: a few minutes on 2 CPU cores
    .venv/bin/python examples/train_gpt.py --steps 3000 --data my.txt
    .venv/bin/python examples/train_gpt.py --resume --steps 3000  # continue from out/train_gpt/ckpt.safetensors
    .venv/bin/python examples/train_gpt.py --dump-ir ir_dump    # every IR stage and the generated numpy source
    .venv/bin/python examples/generate.py --prompt "for"        # sample from the checkpoint
    .venv/bin/tracegrad launch -n 2 examples/train_gpt.py       # data parallel: two ranks, each half of every batch

Writes to --out (default out/train_gpt): ckpt.safetensors (model, AdamW state, step, RNG, data
position; every --save-interval steps, atomically), loss.png, sample.txt, data/{train,val}.bin +
meta.json (the tokenized corpus). Ctrl-C stops at the end of the current step and still writes the
checkpoint, the plot and the summary (a second Ctrl-C stops at once). --resume continues the run in
the checkpoint: its model shape, tokenizer and corpus come from there, and flags that contradict
them are refused before anything is written.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import signal
import sys
import time

import numpy as np

import tracegrad as tg
from tracegrad.models import GPT, GPTConfig, generate
from tracegrad.nn.parallel import DistributedDataParallel
from tracegrad.utils.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from tracegrad.utils.loss_plot import plot_losses
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
    a("--save-interval", type=int, default=250, help="write the checkpoint every this many steps (0: at the end)")
    a("--resume", action="store_true", help="continue from OUT/ckpt.safetensors")
    a("--dump-ir", default=None, metavar="DIR", help="write every IR stage and the generated source to DIR")
    a("--no-compile", action="store_true", help="run the step eagerly (slow; for comparison)")
    args = p.parse_args(argv)
    # which flags were given on the command line (a parse where nothing has a default)
    bare = copy.deepcopy(p)
    for action in bare._actions:
        action.default = argparse.SUPPRESS
    args.given = set(vars(bare.parse_args(argv)))
    return args


class UsageError(SystemExit):
    """A one-line error about the command line or the inputs, raised before anything is written."""

    def __init__(self, msg: str):
        super().__init__(f"train_gpt.py: error: {msg}")


# flags that define the model, the tokenizer and the corpus: a resumed run takes them from its checkpoint
RUN_FLAGS = ("data", "tokenizer", "vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout", "attention",
             "gelu")


def check_resume(args, ckpt_path):
    """Read the checkpoint, adopt its run flags, and refuse flags that contradict it or --steps that
    would train nothing; returns the checkpoint's state."""
    if not os.path.exists(ckpt_path):
        raise UsageError(f"--resume: there is no checkpoint at {ckpt_path} (run without --resume first, or pass "
                         "the --out folder of the run to continue)")
    try:
        state = read_checkpoint(ckpt_path)
    except CheckpointError as e:
        raise UsageError(f"--resume: {e}") from None
    saved = (state.get("extra") or {}).get("args") or {}
    for k in RUN_FLAGS:
        if k not in saved:
            continue
        if k in args.given and getattr(args, k) != saved[k]:
            flag = "--" + k.replace("_", "-")
            raise UsageError(f"--resume: {flag} {getattr(args, k)} contradicts the checkpoint, which was trained "
                             f"with {flag} {saved[k]}; drop the flag to continue that run, or use a new --out")
        setattr(args, k, saved[k])
    if state["step"] >= args.steps:
        raise UsageError(f"--resume: the checkpoint is at step {state['step']}, so --steps {args.steps} would train "
                         f"nothing; pass --steps larger than {state['step']} to continue training")
    return state


def load_corpus(path):
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read(), os.path.basename(path)
        except FileNotFoundError:
            raise UsageError(f"--data {path}: no such file") from None
        except IsADirectoryError:
            raise UsageError(f"--data {path}: is a folder; give a UTF-8 text file") from None
        except UnicodeDecodeError as e:
            raise UsageError(f"--data {path}: not UTF-8 text (byte {e.start}: {e.reason}); convert it, e.g. "
                             f"iconv -f latin1 -t utf-8") from None
        except OSError as e:
            raise UsageError(f"--data {path}: cannot be read ({e.strerror})") from None
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k] for k in sorted(topics)), "pydoc_data.topics"


def check_length(n_tokens: int, args, what: str) -> None:
    """The validation split (10%) must hold at least one block of block_size + 1 tokens."""
    need = 10 * (args.block_size + 1)
    if n_tokens < need:
        raise UsageError(f"--data: the corpus has {n_tokens:,} {what}, too short for --block-size {args.block_size} "
                         f"(the 10% validation split needs {args.block_size + 1}; at least {need:,} in all); use a "
                         f"longer file or a smaller --block-size (at most {max(n_tokens // 10 - 1, 1)})")


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
    if not tg.distributed.is_initialized():
        tg.distributed.init_process_group("gloo")
    rank, world = tg.distributed.get_rank(), tg.distributed.get_world_size()
    if rank != 0:
        sys.stdout = open(os.devnull, "w")       # rank 0 reports for everyone
    ckpt_path = os.path.join(args.out, "ckpt.safetensors")
    resumed = check_resume(args, ckpt_path) if args.resume else None
    text, source = load_corpus(args.data)
    check_length(len(text), args, "characters")     # a lower bound on tokens, before anything is written
    os.makedirs(args.out, exist_ok=True)
    if rank != 0:
        tg.distributed.barrier()                 # rank 0 tokenizes and writes the data files first
    ds = prepare_data(args, text)
    if rank == 0 and world > 1:
        tg.distributed.barrier()
    tok = ds.tokenizer()
    check_length(ds.meta["n_tokens"]["train"] + ds.meta["n_tokens"]["val"], args, "tokens")
    if resumed is not None and resumed["extra"].get("tokenizer") not in (None, tok.to_dict()):
        raise UsageError(f"--resume: the corpus or tokenizer differs from the one {ckpt_path} was trained with")
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
        state = load_checkpoint(ckpt_path, model=model, optimizer=opt, scheduler=sched)   # checked above
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

    def save(step):
        save_checkpoint(ckpt_path, model=model, optimizer=opt, scheduler=sched, step=step,
                        data_state=ds.state_dict(), extra={"history": history, "config": vars(config),
                                                           "tokenizer": tok.to_dict(), "args": run_args})

    run_args = {k: v for k, v in vars(args).items() if k != "given"}

    # -- the loop ---------------------------------------------------------------------------------
    from tqdm import tqdm
    tokens_per_step = accum * args.batch_size * args.block_size * world
    t_loop = time.perf_counter()
    stop = StopOnInterrupt()
    bar = tqdm(total=args.steps, initial=start, unit="step", dynamic_ncols=True, mininterval=1.0, file=sys.stdout,
               disable=rank != 0)
    timing = {"compile": None, "steps": 0, "s": 0.0}

    def train_one(it):
        if it % args.eval_interval == 0:
            ev = evaluate()
            history["eval"].append([it, ev["train"], ev["val"]])
            bar.write(f"step {it:5d}: train {ev['train']:.4f}, val {ev['val']:.4f}")
        x, y = batch()
        t0 = time.perf_counter()
        loss = train_step(x, y).item()
        dt = time.perf_counter() - t0
        sched.step()
        if timing["compile"] is None:
            timing["compile"] = dt              # the first call traces and compiles
        else:
            timing["steps"], timing["s"] = timing["steps"] + 1, timing["s"] + dt
        history["step"].append(it)
        history["loss"].append(loss)
        tps = tokens_per_step * timing["steps"] / timing["s"] if timing["s"] else 0.0
        bar.set_postfix_str(f"loss {loss:.3f} | {tps:,.0f} tok/s | lr {sched.get_last_lr()[0]:.1e}", refresh=False)
        bar.update(1)
        return it

    done = start
    with stop:
        for it in range(start, args.steps):
            if stop.requested:
                break
            done = train_one(it) + 1
            if args.save_interval and done % args.save_interval == 0 and done < args.steps:
                save(done)
    bar.close()
    train_s = time.perf_counter() - t_loop

    def draw_losses():
        plot_losses(history, os.path.join(args.out, "loss.png"), unigram, "unigram baseline",
                    title_of(args, tok, source))
    if stop.requested:
        print(f"\ninterrupted after step {done}: saving the checkpoint, the plot and the summary")
        save(done)
        if rank != 0:
            return None
        draw_losses()
        ev = history["eval"][-1] if history["eval"] else None
        report(args, start, done, train_s, timing, tokens_per_step, unigram, tok,
               {"train": ev[1], "val": ev[2]} if ev else None, ckpt_path)
        print(f"resume with: .venv/bin/python examples/train_gpt.py --out {args.out} --resume --steps {args.steps}")
        return None
    final = evaluate()
    history["eval"].append([args.steps, final["train"], final["val"]])
    save(args.steps)                            # every rank takes part; rank 0 writes
    if rank != 0:
        return final
    draw_losses()

    try:
        prompt = tg.tensor([tok.encode("\n")])
    except ValueError:                          # a corpus without newlines: start from its first character
        prompt = tg.tensor([tok.encode(text[0])])
    t0 = time.perf_counter()
    out = generate(model, prompt, max_new_tokens=args.sample_tokens, temperature=args.temperature, top_k=args.top_k)
    sample_s = time.perf_counter() - t0
    sample = tok.decode(out[0].tolist())
    with open(os.path.join(args.out, "sample.txt"), "w", encoding="utf-8") as f:
        f.write(sample)
    print(f"\n--- sample ({args.sample_tokens} tokens, {sample_s:.1f} s) ---\n{sample.strip()}\n---")
    report(args, start, args.steps, train_s, timing, tokens_per_step, unigram, tok, final, ckpt_path)
    print(f"total time {time.perf_counter() - t_start:.1f} s")
    return final


def title_of(args, tok, source) -> str:
    kind = "character-level" if args.tokenizer == "char" else f"BPE ({tok.vocab_size} tokens)"
    return f"tracegrad: {kind} GPT on {source}"


class StopOnInterrupt:
    """Inside `with`: the first Ctrl-C asks the loop to stop after the current step (so the
    checkpoint holds a whole step); a second one interrupts at once."""

    def __init__(self):
        self.requested = False

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._old)


def report(args, start, done, train_s, timing, tokens_per_step, unigram, tok, final, ckpt_path):
    if timing["steps"]:
        print(f"training: {done - start} steps in {train_s:.1f} s (first step incl. compile {timing['compile']:.2f} "
              f"s), {timing['s'] / timing['steps'] * 1e3:.1f} ms/step, "
              f"{tokens_per_step * timing['steps'] / timing['s']:,.0f} tokens/s")
    if final is not None:
        print(f"{'final' if done == args.steps else 'last evaluated'} loss: train {final['train']:.4f}, "
              f"val {final['val']:.4f} nats/token | unigram baseline {unigram:.4f}, "
              f"uniform {math.log(tok.vocab_size):.4f}")
    wrote = [ckpt_path, os.path.join(args.out, "loss.png")]
    if done == args.steps:
        wrote.append(os.path.join(args.out, "sample.txt"))
    print(f"wrote {', '.join(wrote)}" + (f", IR dumps in {args.dump_ir}/" if args.dump_ir else ""))


if __name__ == "__main__":
    sys.exit(130 if main() is None else 0)
