"""Sample text from a checkpoint written by examples/train_gpt.py.

    python examples/generate.py                                  # out/train_gpt/ckpt.safetensors
    python examples/generate.py --prompt "def " --num-samples 3 --max-new-tokens 300 --top-k 20
    python examples/generate.py --greedy --prompt "The "

The prompt runs as one prefill pass, then one compiled decode step per token (static KV cache, the
position a device tensor, sampling inside the step); the script prints how many times it was traced.
"""
from __future__ import annotations

import argparse
import time

import tracegrad as tg
from tracegrad.models import GPT, GPTConfig, decode_step_fn, generate
from tracegrad.utils.checkpoint import read_checkpoint
from tracegrad.utils.tokenizers import tokenizer_from_dict


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default="out/train_gpt/ckpt.safetensors")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--num-samples", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    state = read_checkpoint(args.ckpt)          # safetensors + JSON metadata; nothing is unpickled
    extra = state["extra"]
    model = GPT(GPTConfig(**extra["config"]))
    model.load_state_dict(state["model"])
    tok = tokenizer_from_dict(extra["tokenizer"])
    print(f"{args.ckpt}: step {state['step']}, {model.summary()}")

    tg.manual_seed(args.seed)
    idx = tg.tensor([tok.encode(args.prompt)] * args.num_samples)     # i64[num_samples, len(prompt)]
    t0 = time.perf_counter()
    out = generate(model, idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, greedy=args.greedy)
    dt = time.perf_counter() - t0
    for i, row in enumerate(out.tolist()):
        print(f"--- sample {i} ---\n{tok.decode(row)}")
    step = decode_step_fn(model, filtered=bool(args.top_k) or args.top_p is not None)
    print(f"--- {args.num_samples} x {args.max_new_tokens} tokens in {dt:.1f} s "
          f"({args.num_samples * args.max_new_tokens / dt:,.0f} tokens/s); step traced "
          f"{len(step.entries)} time(s) (prefill, decode), run {sum(e.calls for e in step.entries)} times")


if __name__ == "__main__":
    main()
