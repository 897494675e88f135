"""The serving engine against `generate` and a reference loop without a cache: continuous batching
with requests joining at different steps, the paged cache against the contiguous one, prefix
caching, preemption, seeded sampling and the stop conditions. Token ids compare exactly: the same
tiny models with weights far from ties (see test_generate's _gpt) and greedy decoding."""
from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import test_generate

import tracegrad as tg
from tracegrad.models import generate
from tracegrad.serve import LLM, SamplingParams
from tracegrad.serve.block_manager import BlockManager
from tracegrad.serve.sequence import Sequence
from tracegrad.utils.tokenizers import CharTokenizer
from fake_cupy import fake_cuda  # noqa: F401,E402  (a CuPy stand-in: device placement on the CPU)

GREEDY = SamplingParams(temperature=0.0, max_tokens=6)
# NOTE: one model of each kind for the module: engines over one model share its compiled steps
_gpt, _llama = functools.cache(test_generate._gpt), functools.cache(test_generate._llama)


def _prompts(n, lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(0, 37, lengths[i % len(lengths)])] for i in range(n)]


def _reference(model, prompt, n, use_cache):
    out = generate(model, tg.tensor([prompt]), n, greedy=True, use_cache=use_cache)
    return [int(t) for t in out.numpy()[0, len(prompt):]]


def _run_joining(llm, prompts, params, join_every=2):
    """Add one prompt every `join_every` steps while the batch runs; outputs in prompt order."""
    seqs, pending, steps = [], list(prompts), 0
    while pending or llm.has_unfinished_requests():
        if pending and steps % join_every == 0:
            seqs.append(llm.add_request(pending.pop(0), params))
        llm.step()
        steps += 1
    return [s.completion_token_ids for s in seqs]


@pytest.mark.parametrize("make", [_gpt, _llama], ids=["gpt", "llama-gqa"])
def test_greedy_engine_equals_generate_and_no_cache_loop_with_requests_joining(make):
    model = make()
    prompts = _prompts(5, [3, 9, 5, 14, 1])
    llm = LLM(model, block_size=4, max_num_seqs=8)
    got = _run_joining(llm, prompts, GREEDY)
    assert llm.num_steps["prefill"] >= 3            # requests joined a running batch
    for p, toks in zip(prompts, got):
        assert toks == _reference(model, p, 6, True) == _reference(model, p, 6, False), p


def test_paged_cache_equals_contiguous_whatever_the_block_size():
    model = _gpt()
    prompts = _prompts(4, [2, 11, 6, 7], seed=1)
    want = [o.token_ids for o in LLM(model, block_size=32, num_blocks=8).generate(prompts, GREEDY)]   # one block each
    got = [o.token_ids for o in LLM(model, block_size=2, num_blocks=64).generate(prompts, GREEDY)]
    assert got == want
    assert want == [_reference(model, p, 6, True) for p in prompts]


def test_prefix_cache_hits_are_counted_and_give_the_same_tokens():
    model = _gpt()
    shared = _prompts(1, [12], seed=2)[0]
    prompts = [shared + [1, 2], shared + [3], shared + [4, 5, 6]]
    cold = LLM(model, block_size=4, enable_prefix_caching=False)
    want = [o.token_ids for o in cold.generate(prompts, GREEDY)]
    # one prefill step with three prompts of one prefix: none may read blocks the step has yet to write
    assert [o.token_ids for o in LLM(model, block_size=4).generate(prompts, GREEDY)] == want
    warm = LLM(model, block_size=4)
    warm.generate(prompts[:1], GREEDY)               # the first request leaves its blocks in the cache
    assert warm.stats()["prefix_cache_hit_tokens"] == 0
    got = [o.token_ids for o in warm.generate(prompts, GREEDY)]
    assert got == want
    assert warm.stats()["prefix_cache_hit_tokens"] == 3 * 12     # three full blocks of the shared prefix each
    assert cold.stats()["prefix_cache_hit_tokens"] == 0
    assert warm.blocks.num_free == len(warm.blocks.blocks)       # every reference given back


def test_preemption_recomputes_and_gives_the_same_tokens():
    model = _gpt()
    prompts = _prompts(4, [5, 6, 7, 4], seed=3)
    params = SamplingParams(temperature=0.0, max_tokens=10)
    roomy = LLM(model, block_size=2)
    want = [o.token_ids for o in roomy.generate(prompts, params)]
    tight = LLM(model, block_size=2, num_blocks=14)       # 4 prompts need 12 blocks up front; decoding needs more
    got = [o.token_ids for o in tight.generate(prompts, params)]
    assert tight.stats()["preemptions"] > 0 and roomy.stats()["preemptions"] == 0
    assert got == want


def test_seeded_sampling_equals_generate_and_ignores_batch_mates():
    model = _gpt()
    p = [4, 5, 6]
    params = SamplingParams(temperature=0.9, max_tokens=8, seed=5)
    want = [int(t) for t in generate(model, tg.tensor([p]), 8, temperature=0.9, seed=5).numpy()[0, 3:]]
    llm = LLM(model, block_size=4)
    outs = llm.generate([p, [7, 8], p], [params, SamplingParams(temperature=1.0, max_tokens=8), params])
    assert outs[0].token_ids == outs[2].token_ids == want


@functools.cache
def _char_model():
    tok = CharTokenizer(sorted(set("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,:!?'\n0123456789")))
    tg.manual_seed(0)
    from tracegrad.models import GPT, GPTConfig
    model = GPT(GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32))
    for q in model.parameters():
        q.data.mul_(5.0)
    return model, tok


def _char_llm(**kw):
    model, tok = _char_model()
    return LLM(model, tokenizer=tok, block_size=4, **kw), tok


def test_stop_strings_max_tokens_eos_and_ignore_eos():
    llm, tok = _char_llm()
    base = llm.generate("hello", SamplingParams(temperature=0.0, max_tokens=12))[0]
    assert base.finish_reason == "length" and len(base.token_ids) == 12 and base.text == tok.decode(base.token_ids)
    stop = base.text[4:6]
    cut = llm.generate("hello", SamplingParams(temperature=0.0, max_tokens=12, stop=[stop]))[0]
    assert cut.finish_reason == "stop" and cut.text == base.text[:base.text.find(stop)]
    llm.eos_token_id = base.token_ids[3]
    first = base.token_ids.index(llm.eos_token_id)
    eos = llm.generate("hello", SamplingParams(temperature=0.0, max_tokens=12))[0]
    assert eos.finish_reason == "stop" and eos.token_ids == base.token_ids[:first + 1]
    assert eos.text == tok.decode(base.token_ids[:first])           # the EOS token is not text
    ignored = llm.generate("hello", SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True))[0]
    assert ignored.token_ids == base.token_ids
    assert llm.blocks.num_free == len(llm.blocks.blocks)


def test_bad_requests_raise_value_errors():
    llm, _ = _char_llm()
    with pytest.raises(ValueError, match="context"):
        llm.add_request("x" * 64)
    for bad in (dict(max_tokens=0), dict(temperature=-1.0), dict(top_p=0.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingParams(**bad)


def test_block_manager_shares_and_frees_blocks():
    bm = BlockManager(num_blocks=6, block_size=2)
    a = Sequence([1, 2, 3, 4, 5], SamplingParams(), 0)
    b = Sequence([1, 2, 3, 4, 9], SamplingParams(), 0)
    bm.allocate(a)
    bm.allocate(b)
    assert b.num_cached_tokens == 0       # a's blocks are not written yet: b computes its own
    bm.deallocate(b)
    bm.written([a])
    bm.allocate(b)
    assert b.block_table[:2] == a.block_table[:2] and b.num_cached_tokens == 4
    assert bm.num_free == 6 - 4
    bm.deallocate(a)
    assert bm.num_free == 6 - 3           # the shared blocks are still b's
    bm.deallocate(b)
    assert bm.num_free == 6
    c = Sequence([1, 2, 3, 4], SamplingParams(), 0)
    bm.allocate(c)
    assert c.num_cached_tokens == 2       # the block holding the last prompt token is always computed


@pytest.mark.gpu
@pytest.mark.parametrize("make", [_gpt, _llama], ids=["gpt", "llama-gqa"])
def test_engine_on_cuda_equals_cpu(make):
    prompts = _prompts(5, [3, 9, 5, 14, 1])
    want = [o.token_ids for o in LLM(make(), block_size=4).generate(prompts, GREEDY)]
    llm = LLM(make.__wrapped__(), device="cuda", block_size=4, num_blocks=64)
    assert _run_joining(llm, prompts, GREEDY) == want
    bf16 = LLM(make.__wrapped__(), device="cuda", dtype=tg.bfloat16, num_blocks=64)
    sampled = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=20, seed=1)
    outs = [o.token_ids for o in bf16.generate(prompts, sampled)]
    # a sequence stops at max_tokens or where the context (24 positions) is full
    assert [len(o) for o in outs] == [min(20, bf16.max_model_len - len(p)) for p in prompts]
    assert [o.token_ids for o in bf16.generate(prompts, sampled)] == outs      # the seed fixes the draws


def test_engine_keeps_everything_on_the_models_device(fake_cuda, monkeypatch):
    from tracegrad.runtime import cublas
    monkeypatch.setattr(cublas, "supports", lambda a, b: False)     # the stand-in has no cuBLAS: CuPy's matmul
    prompts = _prompts(2, [3, 6])
    want = [o.token_ids for o in LLM(_gpt(), block_size=4).generate(prompts, GREEDY)]
    llm = LLM(test_generate._gpt().to("cuda"), block_size=4, num_blocks=16)
    assert llm.runner.k_cache[0].device == "cuda:0"
    got = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=2))
    assert [o.token_ids for o in got] == [w[:2] for w in want]


def test_finished_sequences_leave_the_queues_at_the_next_schedule():
    """Finishing marks a sequence and frees its blocks; the queues drop it at the next schedule,
    so neither a finished waiting nor a finished running sequence is scheduled again."""
    from tracegrad.serve.scheduler import Scheduler
    bm = BlockManager(num_blocks=8, block_size=2)
    sched = Scheduler(bm, max_num_seqs=2, max_num_batched_tokens=64, max_model_len=64)
    a, b, c = (Sequence([1, 2, 3], SamplingParams(), 0) for _ in range(3))
    for s in (a, b, c):
        sched.add(s)
    assert sched.schedule() == ([a, b], True)      # c waits: two sequences at most
    sched.finish(a)
    sched.finish(c)
    assert bm.num_free == 8 - 2 and sched.has_unfinished()
    assert sched.schedule() == ([b], False)
    sched.finish(b)
    assert not sched.has_unfinished() and sched.schedule() == ([], False) and bm.num_free == 8


def test_streamed_text_adds_up_to_the_final_text_when_some_is_held_back():
    """`step()` holds back what could still become a stop string; what it held is sent later, so the
    new texts of a request, joined, are its final text, with a stop string that never comes, one that
    is cut off, and none."""
    llm, tok = _char_llm()
    base = llm.generate("hello", SamplingParams(temperature=0.0, max_tokens=16))[0].text
    for stop in (["~~~"], [base[6:9]], []):
        seq = llm.add_request("hello", SamplingParams(temperature=0.0, max_tokens=16, stop=stop))
        streamed, done = "", False
        while not done:
            for out in llm.step():
                if out.seq is seq:
                    streamed, done = streamed + out.new_text, out.finished
        assert streamed == llm.output(seq).text == (base[:base.find(stop[0])] if stop == [base[6:9]] else base), stop


def test_async_scheduling_gives_the_tokens_of_waiting_for_every_step():
    """Scheduling a decode while the previous one is in flight changes no token, text or finish
    reason: with requests joining, seeded sampling, EOS-like stop tokens and stop strings that end a
    request while its next token is already being computed, prefix hits and preemption."""
    model, tok = _char_model()
    base = LLM(model, tokenizer=tok, block_size=4).generate("hello", SamplingParams(temperature=0.0, max_tokens=12))[0]
    prompts = ["hello", "hello there", "abc", "hello", "xyz abc", "hello there, you", "q"]
    params = [SamplingParams(temperature=0.0, max_tokens=12, stop_token_ids=[base.token_ids[5]]),
              SamplingParams(temperature=0.9, max_tokens=9, seed=3),
              SamplingParams(temperature=0.0, max_tokens=14, stop=[base.text[3:5]]),
              SamplingParams(temperature=0.0, max_tokens=12, stop=[base.text[7:9]]),
              SamplingParams(temperature=0.8, top_k=5, max_tokens=11, seed=1),
              SamplingParams(temperature=0.0, max_tokens=1),
              SamplingParams(temperature=0.0, max_tokens=20)]
    results = {}
    for overlap in (False, True):
        llm = LLM(model, tokenizer=tok, block_size=2, num_blocks=20, async_scheduling=overlap)
        seqs, pending, ahead_seen = [], list(zip(prompts, params)), False
        for n in itertools.count():
            if not (pending or llm.has_unfinished_requests()):
                break
            if pending and (n % 3 == 0 or len(pending) > 4):
                seqs.append(llm.add_request(*pending.pop(0)))
            llm.step()
            ahead_seen |= any(s.ahead for s in seqs)
        results[overlap] = [(o.token_ids, o.text, o.finish_reason) for o in map(llm.output, seqs)]
        assert ahead_seen == overlap
        assert llm.stats()["preemptions"] > 0 and llm.stats()["prefix_cache_hit_tokens"] > 0
        llm.step()                                          # whatever was in flight is taken in
        assert llm.blocks.num_free == len(llm.blocks.blocks)
    assert results[True] == results[False]
    assert {r for _, _, r in results[True]} == {"stop", "length"}
