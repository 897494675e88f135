"""Tensor parallelism (`Mesh(tp=)`) on thread ranks: the same losses and weights as one device
for LLaMA, GPT-2 (fused qkv, tied head) and a plain model written only here; the collectives
Megatron-LM needs and no more; plans that cannot apply explained."""
from __future__ import annotations

import collections
import copy

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.nn as nn
import tracegrad.nn.functional as F
from tracegrad.ir.passes.parallel import ParallelPlanError
from tracegrad.models.gpt import GPT, GPTConfig
from tracegrad.models.llama import Llama, LlamaConfig

from parallel_check import check_plan, held_bytes, train


def _batches(vocab, shape=(2, 8), n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, vocab, shape), rng.integers(0, vocab, shape)) for _ in range(n)]


def _llama(**kw):   # one layer: compiling the step takes most of a test's time
    cfg = dict(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=16)
    tg.manual_seed(0)
    return Llama(LlamaConfig(**{**cfg, **kw}))


class PlainLM(nn.Module):
    """Written as people write PyTorch: no names the planner knows, biases, GELU, LayerNorm."""

    def __init__(self, vocab=24, dim=16, hidden=32):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, vocab)

    def forward(self, x, y):
        h = self.emb(x)
        h = h + self.fc2(F.gelu(self.fc1(h)))
        logits = self.out(self.norm(h))
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))


def _collectives(graph):
    return collections.Counter((n.phase, n.op) for n in graph.nodes
                               if n.op in ("all_reduce", "all_gather", "reduce_scatter"))


def test_llama_tp2_equals_one_device():
    runs = check_plan(_llama(), _batches(32), tg.Mesh(tp=2))
    step = runs[0][2]
    graph = step.graphs()["tp"]
    counts = _collectives(graph)
    # Megatron: one all_reduce per column/row pair forward and one backward (2 pairs a layer);
    # forward: + the vocab-parallel embedding's sum + the cross-entropy's max, sum and target logit
    assert counts["forward", "all_reduce"] == 2 + 1 + 3
    assert counts["backward", "all_reduce"] == 2 + 1
    assert counts["forward", "all_gather"] == counts["backward", "all_gather"] == 0   # the logits stay split
    plan = {c.module: c for c in graph.meta["tp_plan"]}
    assert plan["model.layers.0.self_attn.q_proj"].style == "column"
    assert plan["model.layers.0.self_attn.o_proj"].style == "row"
    assert plan["model.layers.0.mlp.down_proj"].local_shape == (16, 12)
    assert plan["lm_head"].style == "column" and plan["model.embed_tokens"].style == "vocab"
    text = step.explain()
    assert "model.layers.0.mlp.gate_proj" in text and "all_reduce" in text


@pytest.mark.parametrize("overrides, styles", [
    ({}, {"emb": "vocab", "fc1": "column", "fc2": "row", "out": "column"}),
    ({"out": "replicate", "e*": "replicate"}, {"emb": "replicate", "fc1": "column", "fc2": "row", "out": "replicate"}),
], ids=["auto", "overridden"])
def test_plain_model_tp2_equals_one_device(overrides, styles):
    runs = check_plan(PlainLM(), _batches(24, (4, 6)), tg.Mesh(tp=2), plan=overrides)
    plan = {c.module: c.style for c in runs[0][2].graphs()["tp"].meta["tp_plan"]}
    assert plan == styles


def test_gpt2_fused_qkv_and_tied_head_tp2():
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=32, n_layer=2, n_head=2, n_embd=16, dropout=0.0))
    runs = check_plan(model, _batches(32, (4, 16)), tg.Mesh(tp=2))
    plan = {c.module: c for c in runs[0][2].graphs()["tp"].meta["tp_plan"]}
    assert plan["transformer.h.0.attn.c_attn"].spec == "S(0, groups=3)"     # q|k|v split per head
    assert plan["transformer.wpe"].style == "replicate"


def test_tp_composes_with_dp():
    check_plan(_llama(), _batches(32, (4, 8)), tg.Mesh(dp=2, tp=2))


def test_fewer_kv_heads_than_ranks_keeps_them_whole():
    # grouped-query attention with 1 kv head on 2 ranks: k and v whole on every rank; q and o split
    runs = check_plan(_llama(num_key_value_heads=1), _batches(32), tg.Mesh(tp=2))
    plan = {c.module: c for c in runs[0][2].graphs()["tp"].meta["tp_plan"]}
    assert plan["model.layers.0.self_attn.k_proj"].style == "replicate"
    assert "1 heads of 4 are fewer than tp=2" in plan["model.layers.0.self_attn.v_proj"].why
    assert plan["model.layers.0.self_attn.q_proj"].style == "column"


def _run_tp2(model, plan=None):
    tg.distributed.run_local(lambda rank, m: train(m, _batches(32, n=1), tg.Mesh(tp=2), plan), 2,
                             [(copy.deepcopy(model),) for _ in range(2)])


def test_heads_that_do_not_split_are_refused():
    model = _llama(hidden_size=12, num_attention_heads=3, num_key_value_heads=3, num_hidden_layers=1)
    with pytest.raises(ParallelPlanError) as info:
        _run_tp2(model)
    msg = str(info.value)
    assert "model.layers.0.self_attn.q_proj" in msg and "3 heads of 4" in msg and "tp=2" in msg
    with pytest.raises(ValueError, match="style 'diagonal'"):
        tg.compile(lambda x: x, mesh=tg.Mesh(tp=2), plan={"fc1": "diagonal"})


def test_tp2_holds_half_the_state_and_state_dict_is_whole():
    def run(rank, model):
        opt = tg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

        def train_step(x, y):
            _, loss = model(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            return loss

        step = tg.compile(train_step, backend="numpy", mesh=tg.Mesh(tp=2))
        for x, y in _batches(32, n=2):
            step(tg.tensor(x), tg.tensor(y))
        held = held_bytes(model, opt)
        kinds = {n: type(p._data).__name__ for n, p in model.named_parameters()}
        state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
        evaluate = tg.compile(lambda x, y: model(x, y)[1], backend="numpy")     # no plan: reads the whole
        x, y = _batches(32, n=1, seed=1)[0]
        with tg.no_grad():
            return held, kinds, state, float(evaluate(tg.tensor(x), tg.tensor(y)).item()), step.explain()

    model = _llama()
    full = sum(p.numel() * 4 for p in model.parameters())
    runs = tg.distributed.run_local(run, 2, [(copy.deepcopy(model),) for _ in range(2)])
    _, want, _ = train(model, _batches(32, n=2), clip=False)
    x, y = _batches(32, n=1, seed=1)[0]
    with tg.no_grad():
        want_eval = float(model(tg.tensor(x), tg.tensor(y))[1].item())
    for held, kinds, state, loss, text in runs:
        np.testing.assert_allclose(loss, want_eval, rtol=1e-5)
        assert "state held by this rank" in text and "split over tp" in text
        # parameters + momentum: 2 x full on one device; the norms (32 of 1,680 floats here) stay whole
        assert held < 0.55 * 2 * full, (held, full)
        assert kinds["model.layers.0.self_attn.q_proj.weight"] == "Sharded" == kinds["lm_head.weight"]
        assert kinds["model.norm.weight"] == "ndarray"
        for k, v in want.items():
            # NOTE: split matmuls sum in another order than the whole one: fp32 rounding, not bits
            np.testing.assert_allclose(state[k], v, rtol=1e-4, atol=1e-6, err_msg=k)
    # the gathered state_dict is the same on both ranks: each rank holds the other's half as it sent it
    for k in runs[0][2]:
        np.testing.assert_array_equal(runs[0][2][k], runs[1][2][k])


def test_checkpoint_written_under_tp2_loads_on_one_device(tmp_path):
    from tracegrad.utils.checkpoint import load_checkpoint, save_checkpoint
    path = str(tmp_path / "ckpt.safetensors")

    def run(rank, model):
        opt = tg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

        def train_step(x, y):
            _, loss = model(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            return loss

        step = tg.compile(train_step, backend="numpy", mesh=tg.Mesh(tp=2))
        for x, y in _batches(32, n=2):
            step(tg.tensor(x), tg.tensor(y))
        save_checkpoint(path, model=model, optimizer=opt, step=2)     # every rank calls it; rank 0 writes
        return {k: v.numpy().copy() for k, v in model.state_dict().items()}

    model = _llama()
    runs = tg.distributed.run_local(run, 2, [(copy.deepcopy(model),) for _ in range(2)])
    fresh = _llama(num_hidden_layers=1)
    opt = tg.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    load_checkpoint(path, model=fresh, optimizer=opt)
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), runs[0][k])
    bufs = [s["momentum_buffer"] for s in opt.state.values()]
    assert bufs and all(b.shape == p.shape for b, p in zip(bufs, fresh.parameters()))
