"""Print every stage of a compiled training step, from the traced IR to the generated numpy source.

    python examples/inspect_ir.py                  # a 1-layer GPT step, every stage
    python examples/inspect_ir.py --stage backward # one stage: traced, forward, backward, update,
                                                   #   simplify, decompose, optimized, kernels
    python examples/inspect_ir.py --dump ir_dump   # also write the files TRACEGRAD_DUMP writes

The step is the same shape as examples/train_gpt.py's (forward, backward, clipping, AdamW), on a
model small enough that each stage fits on a screen or two.
"""
from __future__ import annotations

import argparse
import os

import tracegrad as tg
from tracegrad.compile import write_dump
from tracegrad.models import GPT, GPTConfig

STAGES = ("traced", "forward", "backward", "update", "simplify", "decompose", "optimized", "kernels")


def build_step():
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=2, n_embd=8, gelu_approximate="tanh"))
    opt = tg.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)

    @tg.compile
    def train_step(x, y):                       # x, y: i64[2, 8]
        _, loss = model(x, y)
        loss.backward()
        tg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    x, y = tg.randint(0, 16, (2, 8)), tg.randint(0, 16, (2, 8))
    loss = train_step(x, y)
    return train_step, loss


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", choices=STAGES, default=None, help="print only this stage")
    p.add_argument("--dump", default=None, metavar="DIR", help="write every stage, the source and a DOT graph")
    args = p.parse_args(argv)
    step, loss = build_step()
    for stage in ([args.stage] if args.stage else STAGES):
        print(f"\n{'=' * 30} {stage} {'=' * 30}")
        print(step.ir(stage))
    print(f"\n{step.explain()}\nloss after one step: {loss.item():.4f}")
    if args.dump:
        write_dump(step, step.entries[-1], args.dump)
        print(f"wrote {len(os.listdir(args.dump))} files to {args.dump}/")


if __name__ == "__main__":
    main()
