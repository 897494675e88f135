"""examples/train_gpt.py as a new user meets it: clear one-line errors before anything is written,
periodic atomic checkpoints, Ctrl-C that still saves, and --resume rules."""
import importlib.util
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def train_gpt():
    spec = importlib.util.spec_from_file_location("train_gpt", os.path.join(ROOT, "examples", "train_gpt.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--batch-size", "2",
        "--eval-interval", "3", "--eval-iters", "1", "--sample-tokens", "3", "--warmup", "1"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 20, encoding="utf-8")
    return str(path)


def _run(mod, *args):
    return mod.main([*TINY, *args])


def test_data_errors_write_nothing(train_gpt, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ".encode("latin1") * 300)
    (tmp_path / "short.txt").write_text("abc", encoding="utf-8")
    cases = [("missing.txt", "no such file"), ("latin1.txt", "not UTF-8"), ("short.txt", "smaller --block-size")]
    for name, msg in cases:
        with pytest.raises(SystemExit, match=msg) as e:
            _run(train_gpt, "--data", str(tmp_path / name), "--out", str(out))
        assert "\n" not in str(e.value.code)
    assert not out.exists()


def test_save_interval_resume_rules(train_gpt, tmp_path, corpus, monkeypatch):
    out = str(tmp_path / "out")
    saved = []
    real = train_gpt.save_checkpoint
    monkeypatch.setattr(train_gpt, "save_checkpoint", lambda *a, **k: (saved.append(k["step"]), real(*a, **k)))
    _run(train_gpt, "--data", corpus, "--out", out, "--steps", "6", "--save-interval", "2")
    assert saved == [2, 4, 6]
    assert os.path.exists(os.path.join(out, "loss.png")) and os.path.exists(os.path.join(out, "sample.txt"))
    with pytest.raises(SystemExit, match="at step 6, so --steps 4 would train nothing"):
        _run(train_gpt, "--out", out, "--resume", "--steps", "4")
    with pytest.raises(SystemExit, match="--n-layer 2 contradicts the checkpoint.*--n-layer 1"):
        train_gpt.main(["--out", out, "--resume", "--steps", "8", "--n-layer", "2"])
    # flags not given come from the checkpoint (model shape, corpus); the run continues to step 8
    final = train_gpt.main(["--out", out, "--resume", "--steps", "8", "--eval-iters", "1", "--sample-tokens", "2",
                            "--save-interval", "0"])
    assert final is not None and saved[-1] == 8


def test_interrupt_saves_and_exits_cleanly(train_gpt, tmp_path, corpus, monkeypatch):
    class StopAfter(train_gpt.StopOnInterrupt):     # as if Ctrl-C came during the third step
        checks = 0

        @property
        def requested(self):
            StopAfter.checks += 1
            return StopAfter.checks > 3

        @requested.setter
        def requested(self, v):
            pass

    monkeypatch.setattr(train_gpt, "StopOnInterrupt", StopAfter)
    out = str(tmp_path / "out")
    assert _run(train_gpt, "--data", corpus, "--out", out, "--steps", "10", "--save-interval", "0") is None
    from tracegrad.utils.checkpoint import read_checkpoint
    state = read_checkpoint(os.path.join(out, "ckpt.safetensors"))
    assert state["step"] == 3 and len(state["extra"]["history"]["loss"]) == 3
    assert os.path.exists(os.path.join(out, "loss.png"))


def test_moving_average_is_centred():
    from tracegrad.utils.loss_plot import moving_average
    ramp = np.arange(100.0)
    np.testing.assert_allclose(moving_average(ramp, 25)[12:-12], ramp[12:-12])   # no lag on a ramp
    assert len(moving_average(ramp, 25)) == 100
