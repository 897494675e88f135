"""tg.save / tg.load: nested containers round-trip through safetensors + JSON; pickles are refused."""
import io
import pickle

import numpy as np
import pytest
import torch

import tracegrad as tg
from tracegrad.utils.checkpoint import CheckpointError, read_safetensors


def test_nested_round_trip(tmp_path):
    obj = {"model": {"w": tg.randn(3, 4), "b": tg.zeros(4, dtype=tg.bfloat16)}, "iter_num": 7,
           "best_val_loss": tg.tensor(1.25), "config": {"lr": 1e-3, "name": "gpt", "flags": [True, None]},
           "shape": (2, 3), 5: "int key", "dtype": tg.float16, "arr": np.arange(3)}
    tg.save(obj, tmp_path / "ckpt.pt")
    got = tg.load(tmp_path / "ckpt.pt", map_location="cpu")
    np.testing.assert_array_equal(got["model"]["w"].numpy(), obj["model"]["w"].numpy())
    assert got["model"]["b"].dtype == tg.bfloat16
    assert got["iter_num"] == 7 and got["best_val_loss"].item() == 1.25 and got[5] == "int key"
    assert got["config"] == {"lr": 1e-3, "name": "gpt", "flags": [True, None]}
    assert got["shape"] == (2, 3) and got["dtype"] == tg.float16
    np.testing.assert_array_equal(got["arr"], np.arange(3))


def test_file_objects_and_optimizer_state():
    model = tg.nn.Linear(4, 2)
    opt = tg.optim.AdamW(model.parameters(), lr=0.1)
    model(tg.randn(3, 4)).sum().backward()
    opt.step()
    buf = io.BytesIO()
    tg.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buf)
    buf.seek(0)
    ck = tg.load(buf)
    model2 = tg.nn.Linear(4, 2)
    opt2 = tg.optim.AdamW(model2.parameters(), lr=0.5)
    model2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["optimizer"])
    assert opt2.param_groups[0]["lr"] == 0.1
    np.testing.assert_array_equal(opt2.state_dict()["state"][0]["exp_avg"].numpy(),
                                  opt.state_dict()["state"][0]["exp_avg"].numpy())


def test_torch_pickle_is_refused_without_unpickling(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "torch.pt")
    with pytest.raises(pickle.UnpicklingError, match="PyTorch pickle.*never unpickles"):
        tg.load(tmp_path / "torch.pt")
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(tg.serialization.UnpicklingError, match="weights_only"):
        tg.load(tmp_path / "raw.pkl")


def test_not_safetensors_messages(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "torch.pt")
    with pytest.raises(CheckpointError, match=r"not a safetensors file \(looks like a PyTorch pickle"):
        read_safetensors(str(tmp_path / "torch.pt"))
    (tmp_path / "noise.bin").write_bytes(np.random.default_rng(0).bytes(64))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_safetensors(str(tmp_path / "noise.bin"))


def test_bare_safetensors_loads_as_state_dict(tmp_path):
    import safetensors.numpy as stnp
    stnp.save_file({"w": np.ones((2, 2), np.float32)}, str(tmp_path / "w.safetensors"))
    sd = tg.load(tmp_path / "w.safetensors")
    assert sd["w"].shape == (2, 2)


def test_header_lengths_that_look_like_pickle_bytes(tmp_path):
    # NOTE: a safetensors file starts with its header's length; a low byte of 0x80 followed by 2..5
    # (a header of 0x280..0x580 bytes) reads like a pickle's first two bytes
    hits = 0
    for n in range(1, 140):
        obj = {"x" * n: tg.ones(2), "k": list(range(n))}
        buf = io.BytesIO()
        tg.save(obj, buf)
        blob = buf.getvalue()
        hits += blob[0] == 0x80 and 2 <= blob[1] <= 5
        buf.seek(0)
        assert tg.load(buf)["k"] == list(range(n))
    assert hits            # the loop did meet such headers
