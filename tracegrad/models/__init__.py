"""tracegrad.models: reference models written as a PyTorch user would write them.

    from tracegrad.models import GPT, GPTConfig, Llama, LlamaConfig, ResNet, generate
"""
from .cnn import BasicBlock, ResNet  # noqa: F401
from .generate import decode_step_fn, generate  # noqa: F401
from .gpt import GPT, GPTConfig  # noqa: F401
from .llama import Llama, LlamaConfig  # noqa: F401
