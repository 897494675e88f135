"""`tracegrad serve CHECKPOINT --port N`: the OpenAI-compatible server on a checkpoint.

    tracegrad serve out/train_gpt/ckpt.safetensors --port 8000
    python -m tracegrad.serve Qwen3-0.6B/ --device cuda --dtype bfloat16 --max-num-seqs 128
"""
from __future__ import annotations

import argparse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tracegrad serve", description="Serve a model over an OpenAI-compatible HTTP API.")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a tracegrad checkpoint (.safetensors) or a Hugging Face model folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default=None, help="cpu or cuda (default: where the weights load: cpu)")
    p.add_argument("--dtype", default=None, choices=[None, "float32", "bfloat16", "float16"])
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--num-blocks", type=int, default=None)
    p.add_argument("--no-prefix-caching", action="store_true")


def main(argv=None) -> int:
    return run(parser().parse_args(argv))


def run(args) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise SystemExit(f"tracegrad serve needs {e.name}: pip install 'tracegrad[serve]'") from None

    import tracegrad as tg

    # NOTE: the engine and the server (FastAPI, the `serve` extra) load only once the arguments
    # parse, so `--help` answers at once and a missing extra is named.
    from .engine import LLM
    from .server import build_app  # NOTE: as above
    llm = LLM(args.checkpoint, device=args.device, dtype=getattr(tg, args.dtype) if args.dtype else None,
              block_size=args.block_size, num_blocks=args.num_blocks, max_num_seqs=args.max_num_seqs,
              max_model_len=args.max_model_len, enable_prefix_caching=not args.no_prefix_caching)
    print(f"tracegrad serve: {llm.model_name} ({llm.max_model_len} tokens of context, "
          f"{len(llm.blocks.blocks)} KV blocks of {args.block_size}) on http://{args.host}:{args.port}/v1")
    uvicorn.run(build_app(llm, args.served_model_name), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
