"""Serving on the GPU: decode latency of GPT-2 124M and throughput in the shape of nano-vllm's bench.py.

    python benchmarks/serve.py                 # both parts on cuda (about 5 minutes on an H200)
    python benchmarks/serve.py --quick         # a smoke run: fewer, shorter requests
    python benchmarks/serve.py --device cpu    # tiny models on the CPU (checks the script, not speed)
    python benchmarks/serve.py --hf-compile    # (a) also against HF's static cache + torch.compile

(a) Decode latency, GPT-2 124M in bf16 with random weights, batch 1 and 16: ms per generated
    token of `tracegrad.models.generate` (contiguous cache, compiled decode step, sampling on the
    device) and of the engine (`LLM`: paged cache, the paged-attention kernel, decode inputs in
    buffers fixed per batch bucket), against Hugging Face transformers' eager `generate` when
    transformers is installed (else that row says so).
(b) Throughput: 256 requests with prompt and output lengths each uniform in 100..1024 tokens,
    `ignore_eos`, a Qwen3-0.6B-shaped model (28 layers, 16 query / 8 kv heads of 128, vocab
    151936) with random bf16 weights; output tokens per second through `LLM.generate`, and through
    Hugging Face's batched `generate` on the same requests when transformers is installed.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import tracegrad as tg
from tracegrad.models import GPT, GPTConfig, Llama, LlamaConfig, generate
from tracegrad.serve import LLM, SamplingParams


def _sync(t):
    return t.numpy()                     # a device -> host copy waits for the device


def _model(make, device, dtype):
    tg.manual_seed(0)
    m = make()
    return m.to(dtype).to(device) if device != "cpu" else m.to(dtype)


def gpt2(tiny: bool) -> GPT:
    if tiny:
        return GPT(GPTConfig(block_size=256, vocab_size=512, n_layer=2, n_head=4, n_embd=64))
    return GPT(GPTConfig(block_size=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768,
                         gelu_approximate="tanh"))


def qwen3_06b(tiny: bool) -> Llama:
    if tiny:
        return Llama(LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=32, qk_norm=True,
                                 max_position_embeddings=512, tie_word_embeddings=True))
    return Llama(LlamaConfig(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                             num_attention_heads=16, num_key_value_heads=8, head_dim=128, qk_norm=True,
                             max_position_embeddings=4096, rope_theta=1e6, rms_norm_eps=1e-6,
                             tie_word_embeddings=True))


def decode_latency(args, device, dtype, tiny):
    name = "GPT-2 124M, bf16" if not tiny else "a tiny GPT-2 (2 layers, 64 wide), fp32"
    print(f"\n(a) decode latency: {name}, random weights; ms per generated token (decode only: the time for n tokens "
          f"less the time for 1, over n - 1)")
    model = _model(lambda: gpt2(tiny), device, dtype)
    vocab = model.config.vocab_size
    prompt, n = 32, (32 if args.quick else 128)
    rows = []
    for batch in (1, 16):
        idx = tg.tensor(np.random.default_rng(0).integers(0, vocab, (batch, prompt)))
        for _ in range(2):                                       # compile and warm both steps
            _sync(generate(model, idx, n, greedy=True))
        rows.append(("tracegrad generate", batch, _per_token(lambda k: _sync(generate(model, idx, k, greedy=True)), n)))

        # NOTE: decode batches of 1 and 16 are buckets of their own: the decode step runs unpadded
        llm = LLM(model, max_num_seqs=batch, num_blocks=batch * -(-(prompt + n) // 16) + 8,
                  max_model_len=model.config.block_size, enable_prefix_caching=False)   # every run prefills alike
        prompts = [list(map(int, r)) for r in idx.numpy()]

        def engine(k):
            llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=k, ignore_eos=True))
        engine(1)
        engine(n)
        rows.append(("tracegrad LLM (paged)", batch, _per_token(engine, n)))
        rows.append(hf_decode(args, batch, prompt, n, device, tiny))
        if args.hf_compile:
            rows.append(hf_decode(args, batch, prompt, n, device, tiny, compiled=True))
    print(f"{'':26s} {'batch':>5s} {'ms/token':>9s} {'tokens/s':>9s}")
    for name, batch, ms in rows:
        if ms is None:
            print(f"{name:26s} {batch:5d}   skipped: transformers is not installed (or it failed: see above)")
        else:
            print(f"{name:26s} {batch:5d} {ms:9.2f} {batch / ms * 1e3:9.0f}")


def _per_token(run, n) -> float:
    """ms per decode step: (time of n tokens - time of 1 token) / (n - 1), each time the best of three
    (interleaved), so the prefill and the fixed costs cancel."""
    one, many = float("inf"), float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        run(1)
        t1 = time.perf_counter()
        run(n)
        t2 = time.perf_counter()
        one, many = min(one, t1 - t0), min(many, t2 - t1)
    return (many - one) / (n - 1) * 1e3


def hf_decode(args, batch, prompt, n, device, tiny, compiled=False):
    """Hugging Face transformers' eager `generate` on the same shapes (on the CPU too, for the smoke
    run); `compiled`: with its static cache and `torch.compile` of the forward (--hf-compile)."""
    name = "HF static cache + compile" if compiled else "HF transformers eager"
    try:
        import torch
        import transformers
    except ImportError:
        return name, batch, None
    on = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=512) if tiny else transformers.GPT2Config()
    m = transformers.GPT2LMHeadModel(cfg).to(torch.bfloat16 if not tiny else torch.float32).to(on).eval()
    ids = torch.randint(0, cfg.vocab_size, (batch, prompt), device=on)
    extra = {}
    if compiled:
        m.forward = torch.compile(m.forward, mode="reduce-overhead", fullgraph=True)
        extra = dict(cache_implementation="static")

    def run(k):
        with torch.no_grad():
            m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=k, min_new_tokens=k,
                       do_sample=False, pad_token_id=0, **extra)
        if on == "cuda":
            torch.cuda.synchronize()
    try:
        run(n)
        return name, batch, _per_token(run, n)
    except Exception as e:   # noqa: BLE001  (a comparison that does not run is reported, not fatal)
        print(f"{name}, batch {batch}: {type(e).__name__}: {str(e)[:300]}")
        return name, batch, None


def throughput(args, device, dtype, tiny):
    n_req, lo, hi = (32, 16, 128) if args.quick or tiny else (256, 100, 1024)
    print(f"\n(b) throughput: {n_req} requests, prompt and output lengths uniform in {lo}..{hi}, ignore_eos, "
          f"{'a tiny Qwen3-shaped model, fp32' if tiny else 'Qwen3-0.6B-shaped model, bf16'}, random weights")
    t0 = time.perf_counter()
    model = _model(lambda: qwen3_06b(tiny), device, dtype)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, built in "
          f"{time.perf_counter() - t0:.0f} s")
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    prompts = [[int(t) for t in rng.integers(0, vocab, rng.integers(lo, hi + 1))] for _ in range(n_req)]
    params = [SamplingParams(temperature=0.6, max_tokens=int(rng.integers(lo, hi + 1)), ignore_eos=True)
              for _ in range(n_req)]
    llm = LLM(model, max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
              max_model_len=4096 if not tiny else 512, gpu_memory_utilization=args.gpu_memory_utilization,
              async_scheduling=not args.no_async_scheduling)
    print(f"KV cache: {len(llm.blocks.blocks)} blocks of {llm.blocks.block_size} tokens")
    t0 = time.perf_counter()
    n = llm.runner.warmup_decode()
    print(f"decode steps of {n} batch buckets {llm.runner.decode_buckets} compiled in {time.perf_counter() - t0:.0f} s")
    # NOTE: the second run's prompts hit the prefix cache, a prefill shape of its own that it compiles;
    # the third is the steady state
    for run in ("first run, compiling the prefill buckets", "second run, prefix-cache hits", "third run"):
        before = llm.stats()
        t0 = time.perf_counter()
        outs = llm.generate(prompts, params)
        dt = time.perf_counter() - t0
        n_out = sum(len(o.token_ids) for o in outs)
        assert n_out == sum(p.max_tokens for p in params)
        s = {k: v - before[k] for k, v in llm.stats().items() if k.endswith(("steps", "preemptions"))}
        name = "tracegrad LLM" + ("" if llm.async_scheduling else " without async scheduling")
        print(f"{name} ({run}): {n_out} output tokens in {dt:.1f} s = {n_out / dt:,.0f} output tokens/s "
              f"({s['prefill_steps']} prefill and {s['decode_steps']} decode steps, {s['preemptions']} preemptions)")
        if args.quick:
            break
    hf_throughput(args, prompts, params, tiny)


def hf_throughput(args, prompts, params, tiny):
    """Hugging Face's batched `generate` on the same requests: batches of `--hf-batch` prompts, left
    padded, each batch decoding to its longest requested output (only requested tokens count)."""
    try:
        import torch
        import transformers
        cfg_cls, model_cls = transformers.Qwen3Config, transformers.Qwen3ForCausalLM
    except (ImportError, AttributeError):
        print("HF batched generate: skipped (transformers with Qwen3 is not installed)")
        return
    if args.no_hf or tiny or not torch.cuda.is_available():
        print("HF batched generate: skipped (--no-hf, or no CUDA for torch)")
        return
    cfg = cfg_cls(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=4096,
                  tie_word_embeddings=True, rope_theta=1e6)
    m = model_cls(cfg).to(torch.bfloat16).cuda().eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    t0, n_out = time.perf_counter(), 0
    for k in range(0, len(order), args.hf_batch):
        idx = order[k:k + args.hf_batch]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.zeros((len(idx), width), dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[r, width - len(prompts[i]):] = 1
        new = max(params[i].max_tokens for i in idx)
        with torch.no_grad():
            m.generate(ids.cuda(), attention_mask=mask.cuda(), max_new_tokens=new, min_new_tokens=new,
                       do_sample=True, temperature=0.6, pad_token_id=0)
        torch.cuda.synchronize()
        n_out += sum(params[i].max_tokens for i in idx)
    dt = time.perf_counter() - t0
    print(f"HF transformers batched generate (batches of {args.hf_batch}): {n_out} requested output tokens in "
          f"{dt:.1f} s = {n_out / dt:,.0f} output tokens/s")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer and shorter requests, fewer decode steps")
    p.add_argument("--device", default="cuda")
    p.add_argument("--only", choices=["latency", "throughput"], default=None)
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--max-num-batched-tokens", type=int, default=16384)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.45,
                   help="of the free GPU memory, what the KV cache takes (0.45 holds every request of (b) at once)")
    p.add_argument("--no-hf", action="store_true", help="skip Hugging Face's batched generate in (b)")
    p.add_argument("--no-async-scheduling", action="store_true",
                   help="in (b), wait for each decode step before scheduling the next")
    p.add_argument("--hf-batch", type=int, default=64)
    p.add_argument("--hf-compile", action="store_true",
                   help="also time HF generate with its static cache and torch.compile in (a) (slow to compile)")
    args = p.parse_args(argv)
    tiny = args.device == "cpu"
    dtype = tg.float32 if tiny else tg.bfloat16
    print(f"tracegrad serving benchmark on {args.device}{' (tiny models)' if tiny else ''}")
    if args.only in (None, "latency"):
        decode_latency(args, args.device, dtype, tiny)
    if args.only in (None, "throughput"):
        throughput(args, args.device, dtype, tiny)


if __name__ == "__main__":
    main()
