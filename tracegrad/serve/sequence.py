"""`Sequence`: one request's tokens, state, block table and stop bookkeeping.

A sequence is WAITING until the scheduler gives it blocks and prefills it, RUNNING while it
decodes, and FINISHED once a stop condition holds; preemption sends it back to WAITING with its
blocks freed, to be prefilled again over prompt + completion (recompute).

While a decode step runs on the device, the engine may schedule the next one: the sequence is then
`ahead` by the token that step is sampling, which the host has not seen yet. `total_len` counts it;
`len()` counts the tokens the host holds.
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
        self.ahead = 0                    # tokens sampled by a step in flight, not yet in token_ids
        self.finish_reason: str | None = None
        self.text = ""                    # the completion's text so far (when there is a tokenizer)
        self.detok = Detokenizer()        # how far that text is decoded
        self.streamed = 0                 # characters of the text already handed out by `LLM.step`

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def total_len(self) -> int:
        return len(self.token_ids) + self.ahead

    def ends_ahead(self, max_model_len: int) -> bool:
        """Whether the token in flight is its last by length (max_tokens or the context): it is then
        not scheduled again, whatever that token turns out to be."""
        return bool(self.ahead) and (self.num_completion_tokens + self.ahead >= self.params.max_tokens
                                     or self.total_len >= max_model_len)

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
        return (self.total_len + block_size - 1) // block_size

    def block(self, i: int, block_size: int) -> list[int]:
        return self.token_ids[i * block_size:(i + 1) * block_size]

    def __repr__(self) -> str:
        return (f"Sequence({self.seq_id}, {self.status.value}, {self.num_prompt_tokens}+"
                f"{self.num_completion_tokens} tokens, blocks {self.block_table})")
