"""A LLaMA-style decoder (Touvron et al. 2023) with Hugging Face's parameter names: RMSNorm before
each sublayer, rotary position embeddings (RoPE, Su et al. 2021), a SwiGLU MLP (Shazeer 2020) and
grouped-query attention (Ainslie et al. 2023: `num_key_value_heads` < `num_attention_heads`).
Qwen2 adds biases to the q, k, v projections (`attention_bias`); Qwen3 an RMSNorm over each head of
q and k before RoPE (`qk_norm`) and a `head_dim` apart from hidden_size / heads.

    model = Llama(LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=172,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    logits, loss = model(idx, targets)          # names: model.layers.0.self_attn.q_proj.weight, ...
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields

import numpy as np

import tracegrad as tg
import tracegrad.nn as nn
import tracegrad.nn.functional as F

from ..utils.checkpoint import read_safetensors


@dataclass
class LlamaConfig:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None     # None: as many as attention heads (no grouping)
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    head_dim: int | None = None                # None: hidden_size // num_attention_heads
    attention_bias: bool = False               # Qwen2: biases on q_proj, k_proj, v_proj
    qk_norm: bool = False                      # Qwen3: q_norm, k_norm (RMSNorm over head_dim)

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")

    @property
    def block_size(self) -> int:
        return self.max_position_embeddings


def rope_tables(head_dim: int, n_pos: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [n_pos, head_dim] in HF's layout (the frequencies repeated over both halves)."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim)
    freqs = np.outer(np.arange(n_pos, dtype=np.float32), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return tg.cat((-x2, x1), dim=-1)


def apply_rope(q, k, cos, sin):
    """q, k: [B, H, T, D]; cos, sin: [T, D]."""
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class LlamaAttention(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        c = config
        self.n_head, self.n_kv, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, self.n_head * self.head_dim, bias=c.attention_bias)
        self.k_proj = nn.Linear(c.hidden_size, self.n_kv * self.head_dim, bias=c.attention_bias)
        self.v_proj = nn.Linear(c.hidden_size, self.n_kv * self.head_dim, bias=c.attention_bias)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, c.hidden_size, bias=False)
        self.qk_norm = c.qk_norm
        if c.qk_norm:
            self.q_norm = nn.RMSNorm(self.head_dim, eps=c.rms_norm_eps)
            self.k_norm = nn.RMSNorm(self.head_dim, eps=c.rms_norm_eps)

    def _qkv(self, x, cos, sin):
        B, T, _ = x.size()
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, k, cos, sin)
        return q, k, v

    def forward(self, x, cos, sin):
        B, T, C = x.size()
        q, k, v = self._qkv(x, cos, sin)
        rep = self.n_head // self.n_kv
        if rep > 1:   # [B, Hkv, T, D] -> [B, H, T, D], each kv head shared by `rep` query heads
            k = k[:, :, None].expand(B, self.n_kv, rep, T, self.head_dim).reshape(B, self.n_head, T, self.head_dim)
            v = v[:, :, None].expand(B, self.n_kv, rep, T, self.head_dim).reshape(B, self.n_head, T, self.head_dim)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).contiguous().view(B, T, self.n_head * self.head_dim))

    def step(self, x, cos, sin, attend):
        """x: [B, T, C] new tokens; cos, sin: [B, 1, T, D]; `attend(q, k, v)` reads and extends the
        cache (k, v have the kv heads; repeating them for grouped queries is the cache's job)."""
        B, T, C = x.size()
        y = attend(*self._qkv(x, cos, sin))
        return self.o_proj(y.transpose(1, 2).contiguous().view(B, T, self.n_head * self.head_dim))


class LlamaMLP(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):   # SwiGLU
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = LlamaAttention(config)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))

    def step(self, x, cos, sin, attend):
        x = x + self.self_attn.step(self.input_layernorm(x), cos, sin, attend)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([LlamaDecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)


class Llama(nn.Module):
    """LlamaForCausalLM: `model.*` is the decoder, `lm_head` the output projection."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        cos, sin = rope_tables(config.head_dim, config.max_position_embeddings, config.rope_theta)
        self.register_buffer("rope_cos", tg.tensor(cos), persistent=False)
        self.register_buffer("rope_sin", tg.tensor(sin), persistent=False)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)

    def get_num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def model_size_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def forward(self, idx, targets=None):
        B, T = idx.size()
        assert T <= self.config.max_position_embeddings
        x = self.model.embed_tokens(idx)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        logits = self.lm_head(self.model.norm(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def kv_layout(self) -> tuple[int, int, int]:
        """(layers, kv heads, head dim) of the KV cache."""
        c = self.config
        return c.num_hidden_layers, c.num_key_value_heads, c.head_dim

    def step(self, idx, positions, attend, last):
        """New tokens idx i64[B, T] at `positions` i64[B, T] against a cache behind `attend(layer, q,
        k, v) -> y`; returns the logits [B, V] at column `last` i64[B] of each row."""
        B, T = idx.shape
        x = self.model.embed_tokens(idx)
        flat = positions.reshape(B * T)
        D = self.config.head_dim
        cos = self.rope_cos.index_select(0, flat).view(B, 1, T, D)
        sin = self.rope_sin.index_select(0, flat).view(B, 1, T, D)
        for i, layer in enumerate(self.model.layers):
            x = layer.step(x, cos, sin, lambda q, k, v, i=i: attend(i, q, k, v))
        C = x.shape[-1]
        x = x.gather(1, last.view(B, 1, 1).expand(B, 1, C))
        return self.lm_head(self.model.norm(x))[:, 0, :]

    @classmethod
    def from_pretrained(cls, path: str, config: LlamaConfig | None = None) -> "Llama":
        """Weights from a local safetensors file in HF's layout; config from `config.json` beside it."""
        if config is None:
            with open(os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")) as f:
                hf = json.load(f)
            config = config_from_hf(hf)
        sd, _ = read_safetensors(path)
        model = cls(config)
        model.load_state_dict({k: tg.tensor(v.astype(np.float32) if v.dtype.name == "bfloat16" else v)
                               for k, v in sd.items() if "rotary_emb" not in k},
                              strict=not config.tie_word_embeddings)
        return model



def config_from_hf(hf: dict) -> LlamaConfig:
    """A LlamaConfig from a Hugging Face `config.json` of a LLaMA, Mistral, Qwen2 or Qwen3 model."""
    names = {f.name for f in fields(LlamaConfig)}
    kw = {k: v for k, v in hf.items() if k in names}
    kind = hf.get("model_type", "llama")
    kw.setdefault("attention_bias", kind == "qwen2")
    kw["qk_norm"] = kind.startswith("qwen3")
    return LlamaConfig(**kw)
