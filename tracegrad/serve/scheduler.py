"""Continuous batching: which sequences run in the next step.

Every step is either a prefill (waiting sequences join, up to `max_num_seqs` running and
`max_num_batched_tokens` new tokens, as long as the cache has blocks for them) or, when none can
join, a decode of every running sequence. Finished sequences leave after any step, so requests
join and leave the batch step by step (Yu et al. 2022, Orca; nano-vllm's scheduler). When a decode
needs a block and none is free, the most recently admitted sequence is preempted: its blocks are
freed and it waits to be prefilled again over its prompt and completion (recompute), at the front
of the queue.

A decode may be scheduled while the previous one is still on the device (the engine's async
scheduling): every sequence counts its token in flight (`Sequence.total_len`), and one whose
token in flight is its last by length is left out.
"""
from __future__ import annotations

from collections import deque

from .block_manager import BlockManager
from .sequence import Sequence, Status


class Scheduler:
    def __init__(self, blocks: BlockManager, max_num_seqs: int, max_num_batched_tokens: int, max_model_len: int):
        self.blocks, self.max_model_len = blocks, max_model_len
        self.max_num_seqs, self.max_num_batched_tokens = max_num_seqs, max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: deque[Sequence] = deque()
        self.num_preemptions = 0
        self._finished = 0        # finished sequences still in the queues, dropped at the next schedule

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return len(self.waiting) + len(self.running) > self._finished

    def _drop_finished(self) -> None:
        if self._finished:
            self.waiting = deque(s for s in self.waiting if s.status != Status.FINISHED)
            self.running = deque(s for s in self.running if s.status != Status.FINISHED)
            self._finished = 0

    def schedule(self) -> tuple[list[Sequence], bool]:
        """(sequences, is_prefill) for the next step; empty when nothing can run."""
        self._drop_finished()
        scheduled, tokens = [], 0
        while self.waiting and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if scheduled and tokens + len(seq) > self.max_num_batched_tokens:
                break
            if not self.blocks.can_allocate(seq):
                break
            self.blocks.allocate(seq)
            tokens += len(seq) - seq.num_cached_tokens
            seq.status = Status.RUNNING
            self.waiting.popleft()
            self.running.append(seq)
            scheduled.append(seq)
        if scheduled:
            return scheduled, True
        kept: deque[Sequence] = deque()
        while self.running:
            seq = self.running.popleft()
            if seq.ends_ahead(self.max_model_len):
                kept.append(seq)          # NOTE: it finishes when its last token lands
                continue
            while not self.blocks.can_append(seq):
                if self.running:
                    self.preempt(self.running.pop())
                else:
                    self.preempt(seq)
                    break
            else:
                self.blocks.append(seq)
                scheduled.append(seq)
                kept.append(seq)
        self.running = kept
        return scheduled, False

    def preempt(self, seq: Sequence) -> None:
        self.num_preemptions += 1
        seq.status = Status.WAITING
        self.blocks.deallocate(seq)
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence) -> None:
        """Take a finished or aborted sequence out and free its blocks. It leaves the queues at the
        next `schedule` (a deque removal per finished sequence is quadratic in the batch)."""
        if seq.status == Status.FINISHED:
            return
        self._finished += 1                 # waiting or running: it is in one of the queues
        if seq.block_table:
            self.blocks.deallocate(seq)
        seq.status = Status.FINISHED
