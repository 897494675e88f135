"""tracegrad.serve: an inference engine with continuous batching, a paged KV cache with prefix
caching and sampling on the device, and an OpenAI-compatible HTTP server.

    from tracegrad.serve import LLM, SamplingParams
    outs = LLM("out/train_gpt/ckpt.safetensors").generate(["ROMEO:"], SamplingParams(max_tokens=40))

    tracegrad serve out/train_gpt/ckpt.safetensors --port 8000     # or: python -m tracegrad.serve ...

One short file each (nano-vllm's split): sampling_params, sequence, block_manager (paged cache
bookkeeping, prefix caching), scheduler (continuous batching, preemption), model_runner (the
compiled step and the cache buffers), engine (`LLM`), loader (models and tokenizers), server
(FastAPI), cli.
"""
from .engine import LLM, CompletionOutput, RequestOutput  # noqa: F401
from .sampling_params import SamplingParams  # noqa: F401
