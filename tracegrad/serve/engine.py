"""`LLM`: offline generation with continuous batching and a paged KV cache, in vLLM's shape.

    from tracegrad.serve import LLM, SamplingParams
    llm = LLM("out/train_gpt/ckpt.safetensors")                 # or an HF folder, or a model object
    outs = llm.generate(["To be", "or not"], SamplingParams(temperature=0.8, max_tokens=64))
    outs[0].text, outs[0].token_ids                              # also outs[0].outputs[0].text

Prompts are strings (with a tokenizer) or lists of token ids. A request stops at `max_tokens`,
at the model's EOS (unless `ignore_eos`), at a `stop_token_ids` token or when its text contains a
`stop` string (cut before it), or at `max_model_len`; its `finish_reason` is "length" or "stop".
`step()` runs one scheduler step and returns what each request gained, which the HTTP server
streams; `abort(request_id)` takes a request out and frees its blocks.

Async scheduling (on by default, as vLLM's `async_scheduling`): while a decode step runs on the
device, the host schedules and launches the next one, then takes in the first one's tokens, so the
device never waits for the host's bookkeeping. A decode scheduled that way counts every sequence's
token in flight; a sequence that turns out to stop with it (EOS, a stop string) has its next token
computed and dropped. The tokens are the same as without it, step for step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import tracegrad as tg
from tracegrad.models.sampling import P

from .block_manager import BlockManager
from .loader import load
from .model_runner import InFlight, ModelRunner
from .sampling_params import SamplingParams
from .scheduler import Scheduler
from .sequence import Sequence


@dataclass
class CompletionOutput:
    text: str
    token_ids: list[int]
    finish_reason: str | None


@dataclass
class RequestOutput:
    request_id: int
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = False

    @property
    def text(self) -> str:
        return self.outputs[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.outputs[0].token_ids

    @property
    def finish_reason(self) -> str | None:
        return self.outputs[0].finish_reason


@dataclass
class StepOutput:
    """What one request gained in a step: new token ids, new text, and whether it finished."""
    seq: Sequence
    new_token_ids: list[int]
    new_text: str
    finished: bool


class LLM:
    """The engine. `model`: a path (tracegrad checkpoint, HF safetensors file or folder) or a model
    object with `step`/`kv_layout` (GPT, Llama). `num_blocks` sizes the KV cache (default: room for
    `max_num_seqs` sequences of `max_model_len` up to 2 GiB on the CPU; on CUDA,
    `gpu_memory_utilization` of the free GPU memory: the rest holds the steps' activations and CUDA graphs,
    which are not measured before the cache is made, and a Qwen3-0.6B-shaped model serving 256 requests
    of up to 2048 tokens ran out of memory with 0.77). `backend` is `tg.compile`'s for the steps
    ("auto": Triton on CUDA, numpy on the CPU; "triton" on the CPU runs the kernels interpreted)."""

    def __init__(self, model, tokenizer=None, device: str | None = None, dtype=None, block_size: int = 16,
                 num_blocks: int | None = None, max_num_seqs: int = 256, max_num_batched_tokens: int = 8192,
                 max_model_len: int | None = None, enable_prefix_caching: bool = True,
                 gpu_memory_utilization: float = 0.45, backend: str = "auto", async_scheduling: bool = True):
        self.model, self.tokenizer, self.model_name = load(model, tokenizer)
        if dtype is not None:
            self.model.to(dtype)
        if device is not None:
            self.model.to(device)
        self.model.eval()
        self.max_model_len = min(max_model_len or self.model.config.block_size, self.model.config.block_size)
        self.eos_token_id = self.tokenizer.eos_token_id if self.tokenizer is not None else None
        per_block = ModelRunner.cache_bytes_per_block(self.model, block_size)
        if num_blocks is None:
            num_blocks = min(max_num_seqs * -(-self.max_model_len // block_size), (2 << 30) // per_block)
            dev = next(iter(self.model.parameters())).device
            if dev != "cpu":
                import cupy
                free, _ = cupy.cuda.runtime.memGetInfo()
                num_blocks = max(16, int(free * gpu_memory_utilization) // per_block)
        self.blocks = BlockManager(num_blocks, block_size, enable_prefix_caching)
        self.scheduler = Scheduler(self.blocks, max_num_seqs, max(max_num_batched_tokens, self.max_model_len),
                                   self.max_model_len)
        self.runner = ModelRunner(self.model, block_size, num_blocks, self.max_model_len, max_num_seqs, backend)
        self.seqs: dict[int, Sequence] = {}
        self.num_steps = {"prefill": 0, "decode": 0}
        self.async_scheduling = async_scheduling
        self._in_flight: InFlight | None = None      # the decode step launched and not yet taken in

    # -- requests -------------------------------------------------------------------------------
    def encode(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("this model has no tokenizer: pass prompts as lists of token ids")
            return self.tokenizer.encode(prompt)
        return [int(t) for t in prompt]

    def add_request(self, prompt, params: SamplingParams | None = None) -> Sequence:
        """Queue a request (text or token ids); returns its Sequence (`seq.seq_id` is the id)."""
        params = params or SamplingParams()
        ids = self.encode(prompt)
        if not ids:
            raise ValueError("the prompt is empty")
        if len(ids) >= self.max_model_len:
            raise ValueError(f"the prompt has {len(ids)} tokens; this model's context is {self.max_model_len} "
                             f"tokens, and at least one must be left for the completion")
        vocab = self.model.config.vocab_size
        if max(ids) >= vocab or min(ids) < 0:
            raise ValueError(f"token ids must be in [0, {vocab})")
        seed = params.seed % P if params.seed is not None else int(tg.randint(0, P - 1, (1,)).item())
        seq = Sequence(ids, params, seed, prompt if isinstance(prompt, str) else None)
        self.seqs[seq.seq_id] = seq
        self.scheduler.add(seq)
        return seq

    def abort(self, request_id: int) -> None:
        seq = self.seqs.pop(request_id, None)
        if seq is not None and not seq.is_finished:
            self.scheduler.finish(seq)
            seq.finish_reason = "abort"

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    # -- stepping -------------------------------------------------------------------------------
    def step(self) -> list[StepOutput]:
        """Schedule and launch the next step; return what the requests gained from the step that
        finished (with async scheduling, the decode launched at the previous call)."""
        seqs, is_prefill = self.scheduler.schedule()
        launched = None
        if seqs:
            self.num_steps["prefill" if is_prefill else "decode"] += 1
            launched = self.runner.launch(seqs, is_prefill, prev=self._in_flight)
            if not is_prefill and self.async_scheduling:
                launched.ahead = True
                for seq in seqs:
                    seq.ahead += 1
        outs = self._take_in(self._in_flight) if self._in_flight is not None else []
        self._in_flight = None
        if launched is not None:
            if is_prefill or not self.async_scheduling:
                outs += self._take_in(launched)
            else:
                self._in_flight = launched
        return outs

    def _take_in(self, step: InFlight) -> list[StepOutput]:
        """A launched step's tokens into its sequences: stop checks, freed blocks, text to stream.
        A sequence finished or aborted since it was launched drops its token."""
        tokens = step.tokens()
        live = []
        for seq, tok in zip(step.seqs, tokens):
            seq.ahead -= step.ahead
            if seq.is_finished:
                continue
            seq.token_ids.append(tok)
            live.append((seq, tok))
        self.blocks.written(s for s, _ in live)
        outs = []
        for seq, tok in live:
            self._check_finish(seq, tok)
            if seq.is_finished:
                self.seqs.pop(seq.seq_id, None)
            if self.tokenizer is None:     # NOTE: token ids only: no text to hold back (a step at 256 rows: 0.3 ms)
                outs.append(StepOutput(seq, [tok], "", seq.is_finished))
                continue
            visible = self._visible_text(seq)
            outs.append(StepOutput(seq, [tok], visible[seq.streamed:], seq.is_finished))
            seq.streamed = len(visible)
        return outs

    def _check_finish(self, seq: Sequence, tok: int) -> None:
        p = seq.params
        reason = None
        if tok in p.stop_token_ids or (tok == self.eos_token_id and not p.ignore_eos):
            reason = "stop"
        elif seq.num_completion_tokens >= p.max_tokens or len(seq) >= self.max_model_len:
            reason = "length"
        if self.tokenizer is not None:   # NOTE: a stop token is not part of the text
            ids = seq.completion_token_ids
            seq.text = self.tokenizer.decode(ids[:-1]) if reason == "stop" else seq.detok.text(self.tokenizer, ids)
            cut = min((i for i in (seq.text.find(s) for s in p.stop) if i >= 0), default=-1)
            if cut >= 0:
                seq.text, reason = seq.text[:cut], "stop"
        if reason:
            seq.finish_reason = reason
            self.scheduler.finish(seq)

    def _visible_text(self, seq: Sequence) -> str:
        """The text it is safe to stream: all of it once finished; else held back by the longest stop
        string (minus one) and any trailing incomplete UTF-8 character."""
        text = seq.text
        if seq.is_finished:
            return text
        hold = max((len(s) - 1 for s in seq.params.stop), default=0)
        end = len(text) - hold
        while end > 0 and text[end - 1] == "\ufffd":
            end -= 1
        return text[:max(end, 0)]

    # -- offline API ----------------------------------------------------------------------------
    def generate(self, prompts, sampling_params=None, use_tqdm: bool = False) -> list[RequestOutput]:
        """Run every prompt to completion in one continuous batch; outputs in prompt order."""
        single = isinstance(prompts, str) or (prompts and isinstance(prompts[0], int))
        prompts = [prompts] if single else list(prompts)
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        seqs = [self.add_request(p, sp) for p, sp in zip(prompts, params)]
        bar = None
        if use_tqdm:
            from tqdm import tqdm
            bar = tqdm(total=len(seqs), desc="generate")
        while self.has_unfinished_requests():
            done = sum(o.finished for o in self.step())
            if bar is not None:
                bar.update(done)
        if bar is not None:
            bar.close()
        return [self.output(s) for s in seqs]

    def output(self, seq: Sequence) -> RequestOutput:
        return RequestOutput(seq.seq_id, seq.prompt, seq.token_ids[:seq.num_prompt_tokens],
                             [CompletionOutput(seq.text, seq.completion_token_ids, seq.finish_reason)],
                             seq.is_finished)

    def stats(self) -> dict:
        b = self.blocks
        return {"prefix_cache_hit_tokens": b.hit_tokens, "prefix_cache_queried_tokens": b.queried_tokens,
                "preemptions": self.scheduler.num_preemptions, "free_blocks": b.num_free,
                "num_blocks": len(b.blocks), **{f"{k}_steps": v for k, v in self.num_steps.items()}}
