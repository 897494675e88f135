"""GPT (both attention paths), LLaMA and the CNN train like the same models written in PyTorch:
same weights, same batches, a few AdamW steps with clipping, eager and compiled; losses, first-step
gradients and final weights agree to 1e-5 relative. Also: GPT-2 Hugging Face-layout round trip.
"""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn as tnn  # noqa: E402
import torch.nn.functional as TF  # noqa: E402

import tracegrad as tg  # noqa: E402
from tracegrad.models import GPT, GPTConfig, Llama, LlamaConfig, ResNet  # noqa: E402

RTOL = 1e-5


# -- the same models in PyTorch ------------------------------------------------------------------
class TorchAttention(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_attn = tnn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)
        self.c_proj = tnn.Linear(c.n_embd, c.n_embd, bias=c.bias)
        self.n_head, self.n_embd, self.flash = c.n_head, c.n_embd, c.flash
        if not c.flash:
            self.register_buffer("bias", torch.tril(torch.ones(c.block_size, c.block_size))
                                 .view(1, 1, c.block_size, c.block_size))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = [t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v)]
        if self.flash:
            y = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            y = TF.softmax(att, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class TorchBlock(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = tnn.LayerNorm(c.n_embd, bias=c.bias)
        self.attn = TorchAttention(c)
        self.ln_2 = tnn.LayerNorm(c.n_embd, bias=c.bias)
        self.mlp = tnn.Module()
        self.mlp.c_fc = tnn.Linear(c.n_embd, 4 * c.n_embd, bias=c.bias)
        self.mlp.c_proj = tnn.Linear(4 * c.n_embd, c.n_embd, bias=c.bias)
        self.approx = c.gelu_approximate

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp.c_proj(TF.gelu(self.mlp.c_fc(self.ln_2(x)), approximate=self.approx))


class TorchGPT(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.transformer = tnn.ModuleDict(dict(
            wte=tnn.Embedding(c.vocab_size, c.n_embd), wpe=tnn.Embedding(c.block_size, c.n_embd),
            h=tnn.ModuleList([TorchBlock(c) for _ in range(c.n_layer)]), ln_f=tnn.LayerNorm(c.n_embd, bias=c.bias)))
        self.lm_head = tnn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight

    def forward(self, idx, targets):
        t = idx.size(1)
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(t))
        for b in self.transformer.h:
            x = b(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        return logits, TF.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class TorchLlama(tnn.Module):
    """HF LlamaForCausalLM, written out: same names, RoPE in HF's rotate_half layout, GQA by repeat."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = tnn.Module()
        self.model.embed_tokens = tnn.Embedding(c.vocab_size, c.hidden_size)
        self.model.layers = tnn.ModuleList()
        for _ in range(c.num_hidden_layers):
            layer = tnn.Module()
            layer.input_layernorm = tnn.RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
            layer.post_attention_layernorm = tnn.RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
            layer.self_attn = tnn.Module()
            hd = c.head_dim
            for name, n in (("q_proj", c.num_attention_heads), ("k_proj", c.num_key_value_heads),
                            ("v_proj", c.num_key_value_heads)):
                setattr(layer.self_attn, name, tnn.Linear(c.hidden_size, n * hd, bias=False))
            layer.self_attn.o_proj = tnn.Linear(c.num_attention_heads * hd, c.hidden_size, bias=False)
            layer.mlp = tnn.Module()
            layer.mlp.gate_proj = tnn.Linear(c.hidden_size, c.intermediate_size, bias=False)
            layer.mlp.up_proj = tnn.Linear(c.hidden_size, c.intermediate_size, bias=False)
            layer.mlp.down_proj = tnn.Linear(c.intermediate_size, c.hidden_size, bias=False)
            self.model.layers.append(layer)
        self.model.norm = tnn.RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
        self.lm_head = tnn.Linear(c.hidden_size, c.vocab_size, bias=False)

    def forward(self, idx, targets):
        c, (B, T) = self.c, idx.shape
        hd, H, Hkv = c.head_dim, c.num_attention_heads, c.num_key_value_heads
        inv = 1.0 / c.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd)
        emb = torch.cat([torch.outer(torch.arange(T).float(), inv)] * 2, dim=-1)
        cos, sin = emb.cos(), emb.sin()
        x = self.model.embed_tokens(idx)
        for L in self.model.layers:
            h = L.input_layernorm(x)
            a = L.self_attn
            q = a.q_proj(h).view(B, T, H, hd).transpose(1, 2)
            k = a.k_proj(h).view(B, T, Hkv, hd).transpose(1, 2)
            v = a.v_proj(h).view(B, T, Hkv, hd).transpose(1, 2)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
            y = TF.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, -1)
            x = x + a.o_proj(y)
            h = L.post_attention_layernorm(x)
            x = x + L.mlp.down_proj(TF.silu(L.mlp.gate_proj(h)) * L.mlp.up_proj(h))
        logits = self.lm_head(self.model.norm(x))
        return logits, TF.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


class TorchBasicBlock(tnn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.conv2 = tnn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.shortcut = tnn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride=stride, bias=False), tnn.BatchNorm2d(cout))

    def forward(self, x):
        out = TF.relu(self.bn1(self.conv1(x)))
        return TF.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class TorchResNet(tnn.Module):
    def __init__(self, cin, classes, widths):
        super().__init__()
        self.stem = tnn.Sequential(tnn.Conv2d(cin, widths[0], 3, padding=1, bias=False), tnn.BatchNorm2d(widths[0]),
                                   tnn.ReLU())
        layers, c = [], widths[0]
        for i, w in enumerate(widths):
            layers.append(TorchBasicBlock(c, w, 2 if i > 0 else 1))
            c = w
        self.layers = tnn.Sequential(*layers)
        self.fc = tnn.Linear(c, classes)

    def forward(self, x):
        return self.fc(TF.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1))


# -- training both ---------------------------------------------------------------------------
def _copy_weights(tg_model, torch_model):
    sd = {k: torch.tensor(v.numpy()) for k, v in tg_model.state_dict().items()}
    torch_model.load_state_dict(sd, strict=True)


def _train_tg(model, batches, loss_fn, compiled):
    opt = tg.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)

    def grads(x, y):
        loss = loss_fn(model, x, y)
        loss.backward()
        return loss

    def step(x, y):
        loss = loss_fn(model, x, y)
        loss.backward()
        tg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    if compiled:
        grads, step = tg.compile(grads), tg.compile(step)
    grads(*batches[0])
    first = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
    opt.zero_grad(set_to_none=True)
    losses = [step(x, y).item() for x, y in batches]
    if compiled:
        assert len(step.entries) == 1
    return losses, first


def _train_torch(model, batches, loss_fn):
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    loss = loss_fn(model, *batches[0])
    loss.backward()
    first = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
    opt.zero_grad(set_to_none=True)
    losses = []
    for x, y in batches:
        loss = loss_fn(model, x, y)
        loss.backward()
        tnn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, first


def _compare(make_tg, make_torch, batches_np, loss_tg, loss_torch, compiled, steps_rtol=RTOL):
    tg.manual_seed(0)
    m = make_tg()
    ref = make_torch()
    _copy_weights(m, ref)
    tb = [tuple(tg.tensor(a) for a in b) for b in batches_np]
    pb = [tuple(torch.tensor(a) for a in b) for b in batches_np]
    losses, g0 = _train_tg(m, tb, loss_tg, compiled)
    ref_losses, ref_g0 = _train_torch(ref, pb, loss_torch)
    np.testing.assert_allclose(losses, ref_losses, rtol=steps_rtol)
    for name, g in ref_g0.items():
        scale = np.abs(g).max() + 1e-12
        np.testing.assert_allclose(g0[name], g, rtol=RTOL, atol=RTOL * scale, err_msg=name)
    # NOTE: weights after Adam steps are compared per tensor (relative norm of the difference), leaving
    # out elements whose gradient is round-off (the attention key bias: softmax ignores a shift along
    # the keys, so its true gradient is 0). Adam divides by sqrt(v), which turns round-off into ±lr steps.
    mine = m.state_dict()
    for name, p in ref.state_dict().items():
        p, q = p.numpy().astype(np.float64), mine[name].numpy().astype(np.float64)
        g = np.abs(ref_g0[name]) if name in ref_g0 else np.ones_like(p)
        live = g > 1e-6 * g.max()
        assert np.linalg.norm((q - p)[live]) <= RTOL * (np.linalg.norm(p[live]) + 1e-12), name
    assert losses[-1] < losses[0]


def _lm_batches(vocab, B, T, n=4, seed=0):
    """n steps on one random batch (memorizing it, so the loss must fall)."""
    d = np.random.default_rng(seed).integers(0, vocab, size=(B, T + 1))
    return [(d[:, :-1].copy(), d[:, 1:].copy())] * n


def _lm_loss(model, x, y):
    return model(x, y)[1]


@pytest.mark.parametrize("flash", [True, False], ids=["sdpa", "masked_fill"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_gpt_trains_like_pytorch(flash, compiled):
    cfg = GPTConfig(block_size=16, vocab_size=48, n_layer=2, n_head=2, n_embd=32, flash=flash)
    _compare(lambda: GPT(cfg), lambda: TorchGPT(cfg), _lm_batches(48, 4, 16), _lm_loss, _lm_loss, compiled)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_llama_trains_like_pytorch(compiled):
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    _compare(lambda: Llama(cfg), lambda: TorchLlama(cfg), _lm_batches(40, 3, 12), _lm_loss, _lm_loss, compiled)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_cnn_trains_like_pytorch(compiled):
    rng = np.random.default_rng(0)
    templates = rng.normal(size=(3, 1, 8, 8)).astype(np.float32)     # synthetic 3-class images
    batches = []
    for _ in range(4):
        y = rng.integers(0, 3, size=8)
        batches.append(((templates[y] + 0.5 * rng.normal(size=(8, 1, 8, 8))).astype(np.float32), y))
    ce_tg = lambda m, x, y: tg.nn.functional.cross_entropy(m(x), y)          # noqa: E731
    ce_torch = lambda m, x, y: TF.cross_entropy(m(x), y)                     # noqa: E731
    _compare(lambda: ResNet(1, 3, widths=(4, 8)), lambda: TorchResNet(1, 3, (4, 8)), batches, ce_tg, ce_torch,
             compiled)


def test_gpt_sizes_and_tying():
    m = GPT(GPTConfig(block_size=16, vocab_size=48, n_layer=2, n_head=2, n_embd=32))
    assert m.transformer.wte.weight is m.lm_head.weight
    names = [n for n, _ in m.named_parameters()]
    assert "lm_head.weight" not in names and "transformer.h.1.attn.c_attn.weight" in names
    ref = TorchGPT(m.config)
    assert m.get_num_params(non_embedding=False) == sum(p.numel() for p in ref.parameters())
    assert m.get_num_params() == m.get_num_params(False) - 16 * 32
    assert m.model_size_bytes() == 4 * m.get_num_params(False)
    assert "parameters" in m.summary()


def test_gpt2_hf_layout_round_trip(tmp_path):
    tg.manual_seed(1)
    cfg = GPTConfig(block_size=16, vocab_size=48, n_layer=2, n_head=2, n_embd=32, gelu_approximate="tanh")
    m = GPT(cfg)
    m.save_pretrained(tmp_path)
    from tracegrad.utils.checkpoint import read_safetensors
    sd, meta = read_safetensors(tmp_path / "model.safetensors")
    assert meta == {"format": "pt"} and "lm_head.weight" not in sd
    assert sd["h.0.attn.c_attn.weight"].shape == (32, 96)                 # Conv1D: [in, out]
    np.testing.assert_array_equal(sd["h.0.attn.c_attn.weight"], m.transformer.h[0].attn.c_attn.weight.numpy().T)
    # the same file read by a plain HF-style reader (torch, Conv1D transposed back)
    ref = TorchGPT(cfg)
    ref.load_state_dict({"transformer." + k: torch.tensor(v.T.copy() if k.endswith(
        ("c_attn.weight", "c_proj.weight", "c_fc.weight")) else v) for k, v in sd.items()} | {
        "lm_head.weight": torch.tensor(sd["wte.weight"])}, strict=False)
    # loading: by config.json, and by shapes only with a `transformer.` prefix (n_head given)
    again = GPT.from_pretrained(str(tmp_path / "model.safetensors"))
    x, y = _lm_batches(48, 2, 16)[0]
    with tg.no_grad():
        la = m(tg.tensor(x), tg.tensor(y))[1].item()
        lb = again(tg.tensor(x), tg.tensor(y))[1].item()
    with torch.no_grad():
        lc = ref(torch.tensor(x), torch.tensor(y))[1].item()
    # the reloaded weights are fresh contiguous copies: the same maths, but not promised the same BLAS path
    assert la == pytest.approx(lb, rel=1e-6) and abs(la - lc) < 1e-5 * abs(la)
    for p in again.parameters():
        assert p.numpy().flags.c_contiguous, "loaded weights must own C-contiguous memory, as copy_ makes them"
    assert again.transformer.wte.weight is again.lm_head.weight
    from tracegrad.utils.checkpoint import save_safetensors
    save_safetensors(str(tmp_path / "bare.safetensors"), {"transformer." + k: v for k, v in sd.items()})
    third = GPT.from_pretrained(str(tmp_path / "bare.safetensors"), config=GPTConfig(**vars(cfg)))
    np.testing.assert_array_equal(third.transformer.h[1].mlp.c_fc.weight.numpy(),
                                  m.transformer.h[1].mlp.c_fc.weight.numpy())
