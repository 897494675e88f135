"""What `LLM(path)` and `tracegrad serve PATH` load: a tracegrad training checkpoint with its own
tokenizer, a Hugging Face folder (GPT-2 or Qwen3 names) with a tokenizer.json, and the command line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_generate import _qwen3
from test_serve_engine import _char_llm

import tracegrad as tg
from tracegrad.models import generate
from tracegrad.serve import LLM, SamplingParams
from tracegrad.utils.checkpoint import save_checkpoint, save_safetensors

GREEDY = SamplingParams(temperature=0.0, max_tokens=6)


def test_a_training_checkpoint_serves_with_its_own_tokenizer(tmp_path):
    llm, tok = _char_llm()
    model = llm.model
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(str(path), model=model, step=3, extra={"config": vars(model.config), "tokenizer": tok.to_dict()})
    loaded = LLM(str(path))
    assert loaded.model_name == "ckpt.safetensors"
    assert loaded.generate("to be", GREEDY)[0].text == llm.generate("to be", GREEDY)[0].text


def test_a_hugging_face_gpt2_folder_with_tokenizer_json(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    llm, tok = _char_llm()
    llm.model.save_pretrained(str(tmp_path))
    vocab = {c: i for i, c in enumerate(tok.chars)}
    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="?"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Split("", "isolated")
    hf.decoder = tokenizers.decoders.Fuse()
    hf.save(str(tmp_path / "tokenizer.json"))
    loaded = LLM(str(tmp_path))
    assert loaded.tokenizer.encode("to be") == tok.encode("to be")
    out = loaded.generate("to be", GREEDY)[0]
    want = llm.generate("to be", GREEDY)[0]
    assert out.token_ids == want.token_ids and out.text == want.text


def test_a_qwen3_folder_loads_by_its_names(tmp_path):
    model = _qwen3()
    sd = {k: v.numpy() for k, v in model.state_dict().items() if k != "lm_head.weight"}   # tied: HF leaves it out
    save_safetensors(str(tmp_path / "model.safetensors"), sd, {"format": "pt"})
    c = model.config
    (tmp_path / "config.json").write_text(json.dumps(dict(
        model_type="qwen3", vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads, head_dim=c.head_dim,
        num_key_value_heads=c.num_key_value_heads, max_position_embeddings=c.max_position_embeddings,
        tie_word_embeddings=True, attention_bias=True, eos_token_id=36)))
    llm = LLM(str(tmp_path))
    assert llm.model.config.qk_norm and llm.tokenizer is None
    got = llm.generate([[1, 2, 3]], SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True))[0].token_ids
    assert got == [int(t) for t in generate(model, tg.tensor([[1, 2, 3]]), 5, greedy=True).numpy()[0, 3:]]


def test_the_command_line_parses_and_runs_as_a_module():
    from tracegrad.serve.cli import parser
    args = parser().parse_args(["out/ckpt.safetensors", "--port", "9001"])
    assert args.checkpoint == "out/ckpt.safetensors" and args.port == 9001 and args.host == "127.0.0.1"
    r = subprocess.run([sys.executable, "-m", "tracegrad.serve", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--port" in r.stdout
