"""`tracegrad serve CHECKPOINT --port N`: the OpenAI-compatible server on a checkpoint.

    tracegrad serve out/train_gpt/ckpt.safetensors --port 8000
"""
from ..serve.cli import add_arguments, run  # noqa: F401  (the subcommand's two entry points)
