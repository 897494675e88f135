"""Checkpoints keep 0-d tensors 0-d, a flipped bit anywhere in the file (header included) is a
CheckpointError, and temporary files of killed writers are cleaned up by the next save."""
from __future__ import annotations

import os
import random
import struct

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.nn as nn
from tracegrad.utils.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint


def _model_and_opt():
    tg.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU())
    opt = tg.optim.AdamW(model.parameters(), lr=1e-2)
    x = tg.randn(2, 2, 5, 5)
    model(x).sum().backward()
    opt.step()
    return model, opt


def test_zero_d_tensors_stay_zero_d(tmp_path):
    model, opt = _model_and_opt()
    path = str(tmp_path / "c.safetensors")
    save_checkpoint(path, model=model, optimizer=opt)
    state = read_checkpoint(path)
    assert state["model"]["1.num_batches_tracked"].shape == ()
    steps = [s["step"] for s in state["optim"]["state"].values() if isinstance(s.get("step"), tg.Tensor)]
    assert all(s.shape == () for s in steps)
    # a model with BatchNorm2d loads its own checkpoint (strict shapes)
    model2, opt2 = _model_and_opt()
    load_checkpoint(path, model=model2, optimizer=opt2)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert a.shape == b.shape, k
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_any_flipped_bit_in_the_header_is_an_error(tmp_path):
    model, opt = _model_and_opt()
    path = str(tmp_path / "c.safetensors")
    save_checkpoint(path, model=model, optimizer=opt, step=7, extra={"note": "x", "lr": 0.5})
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    # NOTE: every bit of the header would take a minute; a seeded sample of 300 covers the
    # metadata JSON, the tensor table and the length prefix alike
    rng = random.Random(0)
    bad = str(tmp_path / "bad.safetensors")
    silent = []
    for bit in rng.sample(range((8 + n) * 8), 300):
        flipped = bytearray(blob)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with open(bad, "wb") as f:
            f.write(flipped)
        try:
            read_checkpoint(bad)
        except CheckpointError:
            continue
        silent.append(bit)
    assert not silent, f"{len(silent)} bit flips loaded without error, e.g. bit {silent[0]}"


def test_next_save_removes_temporaries_of_killed_writers(tmp_path):
    path = str(tmp_path / "c.safetensors")
    dead = str(tmp_path / ".c.safetensors.tmp.999999999")     # no such process
    with open(dead, "wb") as f:
        f.write(b"\0" * 1000)
    mine = str(tmp_path / f".c.safetensors.tmp.{os.getppid()}")   # a live process: left alone
    with open(mine, "wb") as f:
        f.write(b"\0")
    save_checkpoint(path, step=1)
    assert not os.path.exists(dead)
    assert os.path.exists(mine)
    assert read_checkpoint(path)["step"] == 1
