"""Decode steps ready for CUDA graphs: batches padded to power-of-two buckets give the tokens of
unpadded ones, padding rows write only the sink slot, every input of the decode step is the same
buffer from step to step (one signature per bucket), and the engine on the Triton backend (the
paged-attention and flash templates, interpreted) gives the numpy backend's tokens."""
from __future__ import annotations

import numpy as np
import pytest
from test_serve_engine import GREEDY, _gpt, _llama, _prompts

from tracegrad.serve import LLM, SamplingParams
from tracegrad.serve.model_runner import DecodeBuffers


def _record_decode_calls(llm):
    """Wrap the decode steps so each call's input buffers (by address) are kept."""
    calls = []
    for key in [k for k in llm.runner.steps if k[0] == "decode"]:
        step = llm.runner.steps[key]

        def spy(*args, _step=step):
            calls.append((args[0].shape[0], [_address(a) for a in args[:4] + args[6:]]))
            return _step(*args)
        llm.runner.steps[key] = spy
    return calls


def _address(t):
    a = t._data
    return a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr


def test_padded_decode_gives_the_tokens_of_unpadded_decode():
    model = _gpt()
    prompts = _prompts(5, [3, 9, 5, 14, 1], seed=4)
    alone = [LLM(model, block_size=4).generate([p], GREEDY)[0].token_ids for p in prompts]    # bucket 1: no padding
    llm = LLM(model, block_size=4, max_num_seqs=8)
    calls = _record_decode_calls(llm)
    together = [o.token_ids for o in llm.generate(prompts, GREEDY)]
    assert together == alone
    assert {B for B, _ in calls} == {8}                     # five rows padded to eight, every step
    assert llm.runner.decode_buckets == (1, 2, 4, 8)


def test_every_decode_input_is_the_same_buffer_every_step():
    # NOTE: on the CPU the table width is bucketed, but a context of 24 tokens always fits its floor
    llm = LLM(_llama.__wrapped__(), block_size=4, max_num_seqs=4)     # a fresh model: its own traces
    compiled = dict(llm.runner.steps)
    calls = _record_decode_calls(llm)
    prompts = _prompts(4, [3, 6, 2, 5], seed=5)
    params = [SamplingParams(temperature=0.0, max_tokens=n) for n in (3, 9, 6, 12)]   # the batch shrinks: 4, 2, 1
    llm.generate(prompts, params)
    by_bucket = {}
    for B, addresses in calls:
        by_bucket.setdefault(B, []).append(addresses)
    assert set(by_bucket) == {1, 2, 4}
    for B, seen in by_bucket.items():
        assert len(seen) > 1 and all(a == seen[0] for a in seen), B
    assert len(compiled[("decode", False)].entries) == 3          # one signature per bucket


def test_padding_rows_write_only_the_sink():
    llm = LLM(_gpt(), block_size=4, num_blocks=16, max_num_seqs=4)
    seqs = [llm.add_request(p, SamplingParams(temperature=0.0, max_tokens=4)) for p in _prompts(3, [5, 2, 7], seed=6)]
    while llm.has_unfinished_requests():
        llm.step()
    (buf,) = [b for (B, _), b in llm.runner.decode_buffers.items() if B == 4]
    sink = llm.runner.sink
    assert buf.host["slots"][3] == sink and (buf.host["block_tables"][3] == llm.runner.num_blocks).all()
    # the blocks were freed, but their slots still hold what the steps wrote
    written = np.flatnonzero(np.abs(llm.runner.k_cache[0].numpy()).sum((1, 2)))
    assert sink in written                                 # the padding row wrote there
    real = written[written < sink]
    assert len(real) == sum(len(s) - 1 for s in seqs)      # every token but the last of each sequence, no more


def test_decode_buffers_pad_with_the_sink_block():
    buf = DecodeBuffers(4, max_blocks=3, sink_block=9, block_size=2, device="cpu")
    from tracegrad.serve.sequence import Sequence
    s = Sequence([1, 2, 3, 4, 5], SamplingParams(temperature=0.5, top_k=3, seed=7), seed=7)
    s.block_table = [4, 1, 6]
    buf.fill([s])
    h = buf.host
    assert h["block_tables"].tolist() == [[4, 1, 6]] + [[9, 9, 9]] * 3
    assert h["slots"].tolist() == [6 * 2 + 0, 18, 18, 18]        # token 4 sits in block 6 at offset 0
    assert h["context_lens"].tolist() == [4, 0, 0, 0] and h["idx"][:, 0].tolist() == [5, 0, 0, 0]
    assert h["temperature"].tolist() == [0.5, 0, 0, 0] and h["top_p"].tolist() == [1.0] * 4
    before = [_address(t) for t in buf.tensors.values()]
    buf.fill([s, s])
    assert [_address(t) for t in buf.tensors.values()] == before
    assert buf.tensors["context_lens"].numpy().tolist() == [4, 4, 0, 0]
    s.token_ids.append(6)
    s.block_table = [4, 1, 6]                          # the same table: row 0 is left as it is
    t = Sequence([1, 2], SamplingParams(), seed=0)
    t.block_table = [2]
    buf.fill([t, s])                                   # rows change hands: both rewritten
    assert h["block_tables"][:2].tolist() == [[2, 9, 9], [4, 1, 6]] and h["slots"][:2].tolist() == [2 * 2 + 1, 13]
    t.token_ids.append(3)
    t.block_table = [2, 5]                             # a new block appended while decoding
    buf.fill([t, s])
    assert h["block_tables"][0].tolist() == [2, 5, 9] and h["slots"][0] == 5 * 2
    t.block_table = [7, 8]                             # preempted and prefilled again: another table, one width
    buf.forget([t])
    buf.fill([t, s])
    assert h["block_tables"][0].tolist() == [7, 8, 9] and h["slots"][0] == 8 * 2
    assert buf.tensors["block_tables"].numpy()[:2].tolist() == [[7, 8, 9], [4, 1, 6]]


@pytest.mark.parametrize("make", [_gpt, _llama], ids=["gpt", "llama-gqa"])
def test_engine_on_the_triton_backend_equals_numpy(make):
    prompts = _prompts(2, [3, 9], seed=7)
    params = SamplingParams(temperature=0.0, max_tokens=4)
    want = [o.token_ids for o in LLM(make(), block_size=4).generate(prompts, params)]
    llm = LLM(make(), block_size=4, backend="triton")
    assert [o.token_ids for o in llm.generate(prompts, params)] == want
    ops = lambda kind: [n.op for n in llm.runner.steps[(kind, False)].graphs()["fused"].nodes]   # noqa: E731
    assert ops("decode").count("paged_attention") == 2                # one a layer, kept whole
    if make is _gpt:   # head dim 16: the fresh prefill's causal attention is the flash template
        assert ops("fresh").count("scaled_dot_product_attention") == 2


def test_engine_on_the_fused_cpu_loops_equals_numpy():
    """The default backend for CPU tensors (this suite runs the serving modules on numpy)."""
    prompts = _prompts(3, [3, 9, 5], seed=8)
    params = SamplingParams(temperature=0.0, max_tokens=5)
    want = [o.token_ids for o in LLM(_gpt(), block_size=4, backend="numpy").generate(prompts, params)]
    llm = LLM(_gpt(), block_size=4, backend="cpu")
    assert [o.token_ids for o in llm.generate(prompts, params)] == want
    assert "k0_" in llm.runner.steps[("decode", False)].ir("kernels")


@pytest.mark.gpu
def test_decode_inputs_keep_their_cuda_buffers():
    llm = LLM(_gpt.__wrapped__(), device="cuda", block_size=4, num_blocks=64, max_num_seqs=4)
    decode = llm.runner.steps[("decode", False)]
    calls = _record_decode_calls(llm)
    prompts = _prompts(3, [3, 6, 2], seed=8)
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=12))
    want = LLM(_gpt(), block_size=4).generate(prompts, SamplingParams(temperature=0.0, max_tokens=12))
    assert [o.token_ids for o in outs] == [o.token_ids for o in want]
    seen = [a for B, a in calls if B == 4]
    assert len(seen) > 1 and all(a == seen[0] for a in seen)
    for e in decode.entries:     # where the runtime replays steps as CUDA graphs, decode steps replay
        graphed = getattr(e.program, "graphed", None)
        if graphed is not None and e.calls > 2:
            assert graphed.active and graphed.replays > 0, graphed.reason


def test_warmup_compiles_every_bucket_once_and_writes_only_the_sink():
    llm = LLM(_gpt.__wrapped__(), block_size=4, max_num_seqs=4)
    step = llm.runner.steps[("decode", False)]
    assert llm.runner.warmup_decode() == 3 and len(step.entries) == 3
    written = np.flatnonzero(np.abs(llm.runner.k_cache[0].numpy()).sum((1, 2)))
    assert written.tolist() == [llm.runner.sink]
    prompts = _prompts(3, [4, 7, 2], seed=9)
    got = [o.token_ids for o in llm.generate(prompts, GREEDY)]
    assert got == [o.token_ids for o in LLM(_gpt(), block_size=4).generate(prompts, GREEDY)]
    assert len(step.entries) == 3                         # serving traced no decode step
