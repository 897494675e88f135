"""`Sequence`: one request's tokens, state, block table and stop bookkeeping.

A sequence is WAITING until the scheduler gives it blocks and prefills it, RUNNING while it
decodes, and FINISHED once a stop condition holds; preemption sends it back to WAITING with its
blocks freed, to be prefilled again over prompt + completion (recompute).
"""
from __future__ import annotations

import enum
import itertools

from .detokenize import Detokenizer
from .sampling_params import SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    _ids = itertools.count()

    def __init__(self, token_ids: list[int], params: SamplingParams, seed: int, prompt: str | None = None):
        self.seq_id = next(Sequence._ids)
        self.token_ids = list(token_ids)
        self.num_prompt_tokens = len(token_ids)
        self.params, self.seed, self.prompt = params, seed, prompt
        self.status = Status.WAITING
        self.block_table: list[int] = []
        self.num_cached_tokens = 0        # tokens whose K and V are in the cache
        self.num_prefix_hit_tokens = 0    # of those, found by prefix caching at the last allocation
        self.finish_reason: str | None = None
        self.text = ""                    # the completion's text so far (when there is a tokenizer)
        self.detok = Detokenizer()        # how far that text is decoded
        self.streamed = 0                 # characters of the text already handed out by `LLM.step`

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def completion_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_completion_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is Status.FINISHED

    def num_blocks(self, block_size: int) -> int:
        return (len(self) + block_size - 1) // block_size

    def block(self, i: int, block_size: int) -> list[int]:
        return self.token_ids[i * block_size:(i + 1) * block_size]

    def __repr__(self) -> str:
        return (f"Sequence({self.seq_id}, {self.status.value}, {self.num_prompt_tokens}+"
                f"{self.num_completion_tokens} tokens, blocks {self.block_table})")
