"""Checkpoints: kill-and-resume reproduces an unbroken run bit for bit; bad files get a clear error."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.models import GPT, GPTConfig
from tracegrad.utils.checkpoint import (CheckpointError, load_checkpoint, read_checkpoint, read_safetensors,
                                        save_checkpoint)
from tracegrad.utils.token_dataset import TokenDataset, prepare_token_files
from tracegrad.utils.tokenizers import CharTokenizer

TEXT = "".join(f"line {i}: the {'quick' if i % 3 else 'lazy'} fox jumps {i * 7 % 13} times.\n" for i in range(300))


def _setup(data_dir):
    tg.manual_seed(1234)
    ds = TokenDataset(data_dir, block_size=16, batch_size=4, seed=99)
    model = GPT(GPTConfig(block_size=16, vocab_size=ds.vocab_size, n_layer=2, n_head=2, n_embd=32, dropout=0.1))
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-3, betas=(0.9, 0.99))
    sched = tg.optim.lr_scheduler.WarmupCosineLR(opt, warmup_iters=2, lr_decay_iters=8, min_lr_ratio=0.1)

    @tg.compile
    def step(x, y):
        _, loss = model(x, y)        # dropout draws from the RNG, so its state must resume too
        loss.backward()
        tg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return ds, model, opt, sched, step


def _run(ds, sched, step, n):
    losses = []
    for _ in range(n):
        losses.append(step(*ds.get_batch("train")).item().hex())   # hex: compared bit for bit
        sched.step()
    return losses


def worker(data_dir, mode, n, ckpt, out):
    """Run in a fresh process: 'full' = n steps; 'first' = n steps then save; 'resume' = load then n."""
    ds, model, opt, sched, step = _setup(data_dir)
    if mode == "resume":
        state = load_checkpoint(ckpt, model=model, optimizer=opt, scheduler=sched)
        ds.load_state_dict(state["data_state"])
    losses = _run(ds, sched, step, n)
    if mode == "first":
        save_checkpoint(ckpt, model=model, optimizer=opt, scheduler=sched, step=n, data_state=ds.state_dict())
    with open(out, "w") as f:
        json.dump(losses, f)


def _spawn(*args):
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import test_checkpoint as t; "
            "t.worker(*sys.argv[1:3], int(sys.argv[3]), *sys.argv[4:])")
    subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True, timeout=300)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tokens")
    prepare_token_files(TEXT, CharTokenizer.train(TEXT), str(d))
    return str(d)


def test_kill_and_resume_is_bit_exact(data_dir, tmp_path):
    n = 6
    ckpt = tmp_path / "ckpt.safetensors"
    _spawn(data_dir, "full", n, ckpt, tmp_path / "full.json")
    _spawn(data_dir, "first", n // 2, ckpt, tmp_path / "a.json")
    _spawn(data_dir, "resume", n // 2, ckpt, tmp_path / "b.json")
    full = json.loads((tmp_path / "full.json").read_text())
    halves = json.loads((tmp_path / "a.json").read_text()) + json.loads((tmp_path / "b.json").read_text())
    assert halves == full
    assert len(set(full)) == n


def test_checkpoint_contents(data_dir, tmp_path):
    ds, model, opt, sched, step = _setup(data_dir)
    _run(ds, sched, step, 2)
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model=model, optimizer=opt, scheduler=sched, step=2, data_state=ds.state_dict(),
                    extra={"note": "hi", "betas": (0.9, 0.99)})
    assert not [p for p in os.listdir(tmp_path) if p != "c.safetensors"]       # no temp file left behind
    tensors, meta = read_safetensors(path)
    assert "model.transformer.h.0.attn.c_attn.weight" in tensors and meta["format"] == "tracegrad-checkpoint"
    assert any(k.startswith("optim.state.") and k.endswith("exp_avg") for k in tensors)
    state = read_checkpoint(path)
    assert state["step"] == 2 and state["data_state"]["position"]["train"] == 2
    assert state["extra"] == {"note": "hi", "betas": (0.9, 0.99)}
    np.testing.assert_array_equal(state["model"]["lm_head.weight"].numpy(), model.lm_head.weight.numpy())


def test_truncated_and_corrupt_files_raise(tmp_path, data_dir):
    ds, model, opt, sched, step = _setup(data_dir)
    path = tmp_path / "good.safetensors"
    save_checkpoint(path, model=model, optimizer=opt, step=0)
    blob = path.read_bytes()
    cases = {
        "truncated": (blob[:len(blob) // 2], "truncated"),
        "header-cut": (blob[:40], "truncated"),
        "empty": (b"", "truncated"),
        "bit-flip": (blob[:-100] + bytes([blob[-100] ^ 0x40]) + blob[-99:], "checksum"),
        "garbage-header": (blob[:8] + b"\xff" * 16 + blob[24:], "corrupt header"),
        "trailing": (blob + b"\0" * 7, "unexpected bytes"),
    }
    for name, (data, why) in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(data)
        with pytest.raises(CheckpointError, match=why) as e:
            load_checkpoint(bad, model=model)
        assert str(bad) in str(e.value), name
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "missing.safetensors")
    from tracegrad.utils.checkpoint import save_safetensors
    save_safetensors(str(tmp_path / "w.safetensors"), {"w": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match="not a tracegrad checkpoint"):
        load_checkpoint(tmp_path / "w.safetensors")
