"""`SamplingParams`: how one request is decoded, in vLLM's names.

    SamplingParams(temperature=0.0, max_tokens=64)                     # greedy
    SamplingParams(temperature=0.8, top_p=0.95, top_k=40, seed=1, stop=["\\n\\n"])
    SamplingParams(max_tokens=512, ignore_eos=True)                    # benchmarks: exact lengths
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    temperature: float = 1.0          # 0: greedy (argmax)
    top_p: float = 1.0                # nucleus sampling; 1: off
    top_k: int = 0                    # 0 or -1: off
    max_tokens: int = 16
    seed: int | None = None           # None: drawn from tracegrad's generator
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        if self.top_k < 0:
            self.top_k = 0
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field, as vLLM does (the server turns it into HTTP 400)."""
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")

    @property
    def filtered(self) -> bool:
        """Whether top-k or top-p is on (the sampler's slower variant)."""
        return self.top_k > 0 or self.top_p < 1.0
