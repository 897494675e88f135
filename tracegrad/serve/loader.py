"""Models and tokenizers for serving, from what a user has on disk.

    model, tok, name = load("out/train_gpt/ckpt.safetensors")     # a tracegrad training checkpoint
    model, tok, name = load("Qwen3-0.6B/")                        # HF folder: config.json, *.safetensors,
                                                                  #   tokenizer.json (GPT-2, LLaMA, Qwen2/3)
    model, tok, name = load(my_module, tokenizer=tok)             # a model object

Tokenizers: a `tokenizer.json` beside the weights goes through the `tokenizers` package; a
tracegrad checkpoint carries its own (char or byte-level BPE, tracegrad/utils/tokenizers.py).
"""
from __future__ import annotations

import json
import os
import struct

from tracegrad.models import GPT, GPTConfig, Llama
from tracegrad.models.llama import config_from_hf
from tracegrad.utils.checkpoint import read_checkpoint
from tracegrad.utils.tokenizers import tokenizer_from_dict


class Tokenizer:
    """encode/decode/eos over either tokenizer kind, plus the chat template when the model has one."""

    def __init__(self, tok, eos_token_id: int | None = None, chat_template: str | None = None):
        self.tok, self.eos_token_id, self.chat_template = tok, eos_token_id, chat_template
        self.hf = type(tok).__module__.startswith("tokenizers")

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids if self.hf else self.tok.encode(text)

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        return self.tok.decode(ids, skip_special_tokens=True) if self.hf else self.tok.decode(ids)

    def apply_chat_template(self, messages: list[dict]) -> str:
        """The model's own template (Jinja, when jinja2 is installed), else a plain one."""
        if self.chat_template:
            try:
                import jinja2
                t = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(self.chat_template)
                return t.render(messages=messages, add_generation_prompt=True, bos_token="", eos_token="")
            except Exception:   # noqa: BLE001  (templates use extensions we may not have: fall back)
                pass
        return plain_chat(messages)


def plain_chat(messages: list[dict]) -> str:
    """`role: content` lines and an open `assistant:` turn: a template any text model can continue."""
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def _hf_tokenizer(folder: str, eos: int | None) -> Tokenizer | None:
    path = os.path.join(folder, "tokenizer.json")
    if not os.path.exists(path):
        return None
    from tokenizers import Tokenizer as HFTokenizer
    template = None
    cfg = os.path.join(folder, "tokenizer_config.json")
    if os.path.exists(cfg):
        with open(cfg) as f:
            tc = json.load(f)
        template = tc.get("chat_template") if isinstance(tc.get("chat_template"), str) else None
    return Tokenizer(HFTokenizer.from_file(path), eos, template)


def load(source, tokenizer=None):
    """(model, Tokenizer or None, model name) from a path or a model object."""
    if not isinstance(source, (str, os.PathLike)):
        tok = tokenizer if tokenizer is None or isinstance(tokenizer, Tokenizer) else Tokenizer(tokenizer)
        return source, tok, type(source).__name__.lower()
    path = os.fspath(source)
    name = os.path.basename(os.path.normpath(path))
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if not files:
            raise FileNotFoundError(f"{path}: no .safetensors file in this folder")
        path = os.path.join(path, files[0])
    if _header_meta(path).get("format") == "tracegrad-checkpoint":
        state = read_checkpoint(path)
        extra = state["extra"] or {}
        model = GPT(GPTConfig(**extra["config"]))
        model.load_state_dict(state["model"])
        tok = tokenizer or (Tokenizer(tokenizer_from_dict(extra["tokenizer"])) if "tokenizer" in extra else None)
        return model.eval(), _wrap(tok), name
    folder = os.path.dirname(os.path.abspath(path))
    hf = {}
    if os.path.exists(os.path.join(folder, "config.json")):
        with open(os.path.join(folder, "config.json")) as f:
            hf = json.load(f)
    kind = hf.get("model_type", "gpt2")
    if kind == "gpt2":
        model = GPT.from_pretrained(path)
    elif kind in ("llama", "mistral", "qwen2", "qwen3"):
        model = Llama.from_pretrained(path, config_from_hf(hf))
    else:
        raise ValueError(f"{path}: model_type {kind!r} is not served (GPT-2, LLaMA, Mistral, Qwen2, Qwen3 are)")
    eos = hf.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) else eos
    tok = tokenizer or _hf_tokenizer(folder, eos)
    return model.eval(), _wrap(tok), hf.get("_name_or_path") or name


def _wrap(tok):
    return tok if tok is None or isinstance(tok, Tokenizer) else Tokenizer(tok)


def _header_meta(path: str) -> dict:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)).get("__metadata__") or {}
