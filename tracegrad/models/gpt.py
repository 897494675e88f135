"""GPT-2 (Radford et al. 2019) in nanoGPT's shape: same config fields, same parameter names, tied
input/output embeddings, so nanoGPT checkpoints and habits carry over.

    model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128))
    logits, loss = model(idx, targets)       # idx, targets: i64[B, T]; logits: f32[B, T, V]
    model = GPT.from_pretrained("gpt2/model.safetensors")   # Hugging Face's GPT-2 layout, local file

`config.flash` picks the attention path: `F.scaled_dot_product_attention(is_causal=True)` (one
composite op with its own backward) or the explicit `masked_fill` + `softmax` of the original
GPT-2 code. `step` runs new tokens against a KV cache held by its caller (an `attend` callback:
models/generate.py keeps a contiguous cache, tracegrad/serve a paged one).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

import tracegrad as tg
import tracegrad.nn as nn
import tracegrad.nn.functional as F

from ..utils.checkpoint import read_safetensors, save_safetensors


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304      # GPT-2's 50257 padded up to a multiple of 64
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True            # biases in Linear and LayerNorm, as GPT-2
    flash: bool = True           # attention via F.scaled_dot_product_attention; else masked_fill + softmax
    gelu_approximate: str = "none"   # "tanh": GPT-2's original GELU (HF "gelu_new"), faster on the CPU than erf


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)   # q, k, v for all heads
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.n_embd, self.dropout, self.flash = config.n_head, config.n_embd, config.dropout, config.flash
        if not self.flash:
            self.register_buffer("bias", tg.tril(tg.ones(config.block_size, config.block_size))
                                 .view(1, 1, config.block_size, config.block_size))

    def _qkv(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # [B, T, C] -> [B, nh, T, hs]
        return [t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v)]

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self._qkv(x)
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None,
                                               dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            att = F.softmax(att, dim=-1)
            att = self.attn_dropout(att)
            y = att @ v                                              # [B, nh, T, hs]
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def step(self, x, attend):
        """x: [B, T, C] new tokens; `attend(q, k, v)` ([B, nh, T, hs] each) reads and extends the cache."""
        B, T, C = x.size()
        y = attend(*self._qkv(x))
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=config.gelu_approximate)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def step(self, x, attend):
        x = x + self.attn.step(self.ln_1(x), attend)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight      # weight tying (Press & Wolf 2017)
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():                   # GPT-2: scaled init of residual projections
            if pn.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # -- sizes ------------------------------------------------------------------------------
    def get_num_params(self, non_embedding: bool = True) -> int:
        """Parameters (tied weights once); without the position embedding by default, as nanoGPT."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def model_size_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def summary(self) -> str:
        c = self.config
        return (f"GPT: {c.n_layer} layers, {c.n_head} heads, {c.n_embd} embd, block {c.block_size}, "
                f"vocab {c.vocab_size}, {'sdpa' if c.flash else 'masked_fill+softmax'} attention | "
                f"{self.get_num_params() / 1e6:.2f}M parameters (non-embedding), "
                f"{self.model_size_bytes() / 2**20:.1f} MiB")

    # -- running ----------------------------------------------------------------------------
    def forward(self, idx, targets=None):
        b, t = idx.size()
        assert t <= self.config.block_size, f"sequence of length {t} > block_size {self.config.block_size}"
        pos = tg.arange(0, t, dtype=tg.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        else:   # inference: only the last position's logits (nanoGPT's shortcut)
            logits = self.lm_head(x[:, [-1], :])
            loss = None
        return logits, loss

    def kv_layout(self) -> tuple[int, int, int]:
        """(layers, kv heads, head dim) of the KV cache."""
        c = self.config
        return c.n_layer, c.n_head, c.n_embd // c.n_head

    def step(self, idx, positions, attend, last):
        """New tokens idx i64[B, T] at `positions` i64[B, T] against a cache behind `attend(layer, q,
        k, v) -> y`; returns the logits [B, V] at column `last` i64[B] of each row."""
        x = self.transformer.wte(idx) + self.transformer.wpe(positions)
        for i, block in enumerate(self.transformer.h):
            x = block.step(x, lambda q, k, v, i=i: attend(i, q, k, v))
        B, T, C = x.shape
        x = x.gather(1, last.view(B, 1, 1).expand(B, 1, C))
        return self.lm_head(self.transformer.ln_f(x))[:, 0, :]

    def crop_block_size(self, block_size: int) -> None:
        assert block_size <= self.config.block_size
        self.config.block_size = block_size
        w = self.transformer.wpe.weight
        self.transformer.wpe.weight = nn.Parameter(w.detach()[:block_size])
        for block in self.transformer.h:
            if hasattr(block.attn, "bias") and not block.attn.flash:
                block.attn.bias = block.attn.bias[:, :, :block_size, :block_size]

    def configure_optimizers(self, weight_decay: float, learning_rate: float, betas=(0.9, 0.95), **kw):
        """AdamW with weight decay on matrices only (nanoGPT's two parameter groups)."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return tg.optim.AdamW(groups, lr=learning_rate, betas=betas, **kw)

    # -- Hugging Face layout ----------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str, config: GPTConfig | None = None, **overrides) -> "GPT":
        """Load GPT-2 weights from a local safetensors file in Hugging Face's layout (`wte.weight`,
        `h.0.attn.c_attn.weight` stored as Conv1D [in, out], optionally prefixed `transformer.`).
        The config comes from `config`, else `config.json` next to the file, else the shapes
        (n_head from GPT-2's sizes); `overrides` (e.g. dropout=0.1) change fields of it."""
        sd, _ = read_safetensors(path)
        sd = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in sd.items()}
        if config is None:
            config = _config_from_hf(path, sd)
        for k, v in overrides.items():
            setattr(config, k, v)
        model = cls(config)
        own = model.state_dict()
        skip = (".attn.bias", ".attn.masked_bias")
        loaded = {}
        for k, v in sd.items():
            if k.endswith(skip) or k == "lm_head.weight":
                continue
            name = "transformer." + k
            if name not in own:
                raise KeyError(f"{path}: unexpected tensor {k!r} for GPT-2")
            if k.endswith(_CONV1D):
                v = v.T                                      # Conv1D [in, out] -> Linear [out, in]
            if tuple(v.shape) != tuple(own[name].shape):
                raise ValueError(f"{path}: {k} has shape {list(v.shape)}, the model wants {list(own[name].shape)}")
            loaded[name] = tg.tensor(v.astype("float32") if v.dtype.name == "bfloat16" else v)
        missing = [k for k in own if k not in loaded and k != "lm_head.weight" and not k.endswith(".attn.bias")]
        if missing:
            raise KeyError(f"{path}: missing GPT-2 tensors {missing[:5]}")
        model.load_state_dict(loaded, strict=False)
        return model

    def hf_state_dict(self) -> dict:
        """numpy arrays by Hugging Face GPT-2 names (Conv1D weights transposed), tied head left out."""
        out = {}
        for k, v in self.state_dict().items():
            if k == "lm_head.weight" or k.endswith(".attn.bias"):
                continue
            a = v.numpy()
            out[k[len("transformer."):]] = (a.T if k.endswith(_CONV1D) else a).copy()
        return out

    def save_pretrained(self, folder: str) -> None:
        """Write `model.safetensors` and `config.json` in Hugging Face's GPT-2 layout."""
        os.makedirs(folder, exist_ok=True)
        save_safetensors(os.path.join(folder, "model.safetensors"), self.hf_state_dict(), {"format": "pt"})
        c = self.config
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump({"model_type": "gpt2", "vocab_size": c.vocab_size, "n_positions": c.block_size,
                       "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head,
                       "activation_function": "gelu_new" if c.gelu_approximate == "tanh" else "gelu",
                       "tracegrad": asdict(c)}, f, indent=1)


_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_GPT2_HEADS = {768: 12, 1024: 16, 1280: 20, 1600: 25}


def _config_from_hf(path: str, sd: dict) -> GPTConfig:
    cfg_path = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if os.path.exists(cfg_path):
        with open(cfg_path) as f:
            hf = json.load(f)
        if "tracegrad" in hf:
            return GPTConfig(**hf["tracegrad"])
        approx = "tanh" if hf.get("activation_function", "gelu_new") in ("gelu_new", "gelu_pytorch_tanh") else "none"
        return GPTConfig(block_size=hf.get("n_positions", 1024), vocab_size=hf["vocab_size"], n_layer=hf["n_layer"],
                         n_head=hf["n_head"], n_embd=hf["n_embd"], bias=True, gelu_approximate=approx)
    vocab, n_embd = sd["wte.weight"].shape
    n_layer = len({k.split(".")[1] for k in sd if k.startswith("h.")})
    if n_embd not in _GPT2_HEADS:
        raise ValueError(f"{path}: no config.json beside it and n_embd={n_embd} is not a GPT-2 size; "
                         "pass config=GPTConfig(...)")
    return GPTConfig(block_size=sd["wpe.weight"].shape[0], vocab_size=vocab, n_layer=n_layer,
                     n_head=_GPT2_HEADS[n_embd], n_embd=n_embd, bias="ln_f.bias" in sd, gelu_approximate="tanh")
