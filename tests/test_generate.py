"""Generation: the KV-cache path equals full recomputation, and its decode step traces once."""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad.models import GPT, GPTConfig, Llama, LlamaConfig, decode_step_fn, generate
from tracegrad.models.generate import _filter


def _gpt(flash=True):
    tg.manual_seed(0)
    m = GPT(GPTConfig(block_size=24, vocab_size=37, n_layer=2, n_head=2, n_embd=32, flash=flash))
    for p in m.parameters():          # larger weights than GPT-2's init, so logits are far from ties
        p.data.mul_(5.0)
    return m


def _llama():
    tg.manual_seed(0)
    m = Llama(LlamaConfig(vocab_size=37, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=24,
                          initializer_range=0.1))
    return m


@pytest.mark.parametrize("make", [_gpt, lambda: _gpt(flash=False), _llama], ids=["gpt", "gpt-masked", "llama"])
def test_greedy_with_cache_equals_without(make):
    model = make()
    idx = tg.tensor(np.random.default_rng(0).integers(0, 37, size=(2, 5)))
    fast = generate(model, idx, max_new_tokens=18, greedy=True)
    slow = generate(model, idx, max_new_tokens=18, greedy=True, use_cache=False)
    assert fast.shape == (2, 23)
    np.testing.assert_array_equal(fast.numpy(), slow.numpy())
    assert len(decode_step_fn(model).entries) == 1     # prompt and 18 tokens: one trace
    generate(model, idx[:1, :3], max_new_tokens=4, greedy=True)
    assert len(decode_step_fn(model).entries) == 2     # a new batch size is a new signature, once


def test_decode_step_traces_once_past_block_size():
    model = _gpt()
    step = decode_step_fn(model)
    out = generate(model, tg.tensor([[1, 2, 3]]), max_new_tokens=60, temperature=0.8, top_k=5)
    assert out.shape == (1, 63) and int(out.numpy().max()) < 37
    assert len(step.entries) == 1 and step.entries[0].calls > 60


def test_sampling_is_seeded_and_filters():
    model = _gpt()
    idx = tg.tensor([[4, 5]])
    tg.manual_seed(7)
    a = generate(model, idx, max_new_tokens=10, temperature=1.0, top_p=0.9)
    tg.manual_seed(7)
    b = generate(model, idx, max_new_tokens=10, temperature=1.0, top_p=0.9)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    greedy = generate(model, idx, max_new_tokens=10, greedy=True)
    np.testing.assert_array_equal(generate(model, idx, max_new_tokens=10, top_k=1).numpy(), greedy.numpy())
    p = _filter(np.log(np.array([[0.5, 0.3, 0.15, 0.05]])), 1.0, None, 0.7)
    np.testing.assert_allclose(p, [[0.625, 0.375, 0, 0]])
    p = _filter(np.log(np.array([[0.5, 0.3, 0.15, 0.05]])), 1.0, 3, None)
    assert p[0, 3] == 0 and abs(p.sum() - 1) < 1e-12
