"""Generation: the KV-cache path equals full recomputation (greedy and seeded sampling), the prompt
is one prefill pass, sampling runs inside the step, and everything stays on the model's device."""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad.models import GPT, GPTConfig, Llama, LlamaConfig, decode_step_fn, generate
from tracegrad.models.sampling import sample_tokens
from fake_cupy import fake_cuda  # noqa: F401  (a CuPy stand-in: device placement on the CPU)


def _gpt(flash=True):
    tg.manual_seed(0)
    m = GPT(GPTConfig(block_size=24, vocab_size=37, n_layer=2, n_head=2, n_embd=32, flash=flash))
    for p in m.parameters():          # larger weights than GPT-2's init, so logits are far from ties
        p.data.mul_(5.0)
    return m


def _llama(**kw):
    tg.manual_seed(0)
    m = Llama(LlamaConfig(vocab_size=37, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=24,
                          initializer_range=0.1, **kw))
    return m


def _qwen3():
    return _llama(head_dim=16, qk_norm=True, attention_bias=True, tie_word_embeddings=True)


@pytest.mark.parametrize("make", [_gpt, lambda: _gpt(flash=False), _llama, _qwen3],
                         ids=["gpt", "gpt-masked", "llama", "qwen3"])
def test_greedy_with_cache_equals_without(make):
    model = make()
    idx = tg.tensor(np.random.default_rng(0).integers(0, 37, size=(2, 5)))
    fast = generate(model, idx, max_new_tokens=18, greedy=True)
    slow = generate(model, idx, max_new_tokens=18, greedy=True, use_cache=False)
    assert fast.shape == (2, 23)
    np.testing.assert_array_equal(fast.numpy(), slow.numpy())
    assert len(decode_step_fn(model, filtered=False).entries) == 2     # prefill [2, 5] and decode [2, 1]
    generate(model, idx[:1, :3], max_new_tokens=4, greedy=True)
    assert len(decode_step_fn(model, filtered=False).entries) == 4     # a new batch size: two more, once


def test_seeded_sampling_with_cache_equals_without():
    model = _gpt()
    idx = tg.tensor([[4, 5, 6], [7, 8, 9]])
    kw = dict(temperature=1.3, top_k=9, top_p=0.95, seed=11)
    fast = generate(model, idx, 8, **kw).numpy()
    np.testing.assert_array_equal(fast, generate(model, idx, 8, use_cache=False, **kw).numpy())
    assert not np.array_equal(fast, generate(model, idx, 8, **dict(kw, seed=12)).numpy())


def test_decode_step_traces_once_past_block_size():
    model = _gpt()
    out = generate(model, tg.tensor([[1, 2, 3]]), max_new_tokens=60, temperature=0.8)
    assert out.shape == (1, 63) and int(out.numpy().max()) < 37
    step = decode_step_fn(model, filtered=False)
    # prefill of 3, decode of 1, and the rebuild from the last 12 tokens (block_size // 2)
    assert len(step.entries) == 3 and sum(e.calls for e in step.entries) == 60


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    model = _gpt()
    idx = tg.tensor([[4, 5]])
    tg.manual_seed(7)
    a = generate(model, idx, max_new_tokens=10, temperature=1.0, top_p=0.9)
    tg.manual_seed(7)
    b = generate(model, idx, max_new_tokens=10, temperature=1.0, top_p=0.9)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    greedy = generate(model, idx, max_new_tokens=10, greedy=True)
    np.testing.assert_array_equal(generate(model, idx, max_new_tokens=10, top_k=1).numpy(), greedy.numpy())


def _draw(probs, n, temperature=1.0, top_k=0, top_p=1.0):
    logits = tg.tensor(np.tile(np.log(probs), (n, 1)).astype(np.float32))
    full = lambda v, dt=tg.float32: tg.full((n,), v, dtype=dt)
    tok = sample_tokens(logits, full(temperature), full(top_k, tg.long), full(top_p),
                        tg.arange(n) * 7 + 3, tg.zeros(n, dtype=tg.long))
    return np.bincount(tok.numpy(), minlength=len(probs)) / n


def test_sampler_frequencies_follow_the_filtered_distribution():
    probs = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    n = 4000     # binomial std of a frequency <= 0.008: 0.03 is ~4 sigma
    np.testing.assert_allclose(_draw(probs, n), probs, atol=0.03)
    kept = probs[:3] / probs[:3].sum()
    np.testing.assert_allclose(_draw(probs, n, top_k=3), np.r_[kept, 0, 0, 0], atol=0.03)
    np.testing.assert_allclose(_draw(probs, n, top_p=0.7), np.r_[kept, 0, 0, 0], atol=0.03)   # 0.65 < 0.7
    sharp = probs ** 2 / (probs ** 2).sum()
    np.testing.assert_allclose(_draw(probs, n, temperature=0.5), sharp, atol=0.03)
    np.testing.assert_array_equal(_draw(probs, 50, temperature=0.0), [1, 0, 0, 0, 0, 0])


def test_sampling_in_a_compiled_step_equals_eager():
    n, V = 64, 50
    rng = np.random.default_rng(1)
    args = (tg.tensor(rng.normal(size=(n, V)).astype(np.float32)), tg.tensor(rng.uniform(0, 2, n).astype(np.float32)),
            tg.tensor(rng.integers(0, 10, n)), tg.tensor(rng.uniform(0.5, 1.2, n).astype(np.float32)),
            tg.tensor(rng.integers(0, 2 ** 31 - 1, n)), tg.tensor(rng.integers(0, 100, n)))
    step = tg.compile(sample_tokens)
    np.testing.assert_array_equal(step(*args).numpy(), sample_tokens(*args).numpy())


def test_generate_keeps_everything_on_the_models_device(fake_cuda, monkeypatch):
    from tracegrad.runtime import cublas
    monkeypatch.setattr(cublas, "supports", lambda a, b: False)     # the stand-in has no cuBLAS: CuPy's matmul
    model = _gpt().to("cuda")
    idx = tg.tensor([[1, 2, 3], [4, 5, 6]])
    out = generate(model, idx, max_new_tokens=2, greedy=True)
    assert out.device == "cuda:0"
    cpu = generate(_gpt(), idx, max_new_tokens=2, greedy=True)
    np.testing.assert_array_equal(out.numpy(), cpu.numpy())


@pytest.mark.gpu
@pytest.mark.parametrize("make", [_gpt, _qwen3], ids=["gpt", "qwen3"])
def test_generate_on_cuda_equals_cpu(make):
    idx = tg.tensor([[1, 2, 3], [4, 5, 6]])
    want = generate(make(), idx, max_new_tokens=12, greedy=True).numpy()
    got = generate(make().to("cuda"), idx, max_new_tokens=12, greedy=True)
    assert got.device.startswith("cuda")
    np.testing.assert_array_equal(got.numpy(), want)
    sampled = generate(make().to("cuda"), idx, max_new_tokens=12, temperature=0.8, top_p=0.9, seed=5).numpy()
    np.testing.assert_array_equal(sampled, generate(make(), idx, 12, temperature=0.8, top_p=0.9, seed=5).numpy())
