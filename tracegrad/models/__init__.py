"""tracegrad.models: reference models (GPT, LLaMA-style, small CNN)."""
