"""PyTorch behaviours scripts rely on: randint's two forms, f-string formatting, return-type
names, describing methods, and `torch` aliased to tracegrad for a whole process."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import tracegrad as tg


def test_randint_forms():
    tg.manual_seed(0)
    a = tg.randint(10, (1000,))
    assert a.shape == (1000,) and a.dtype == tg.int64 and 0 <= a.numpy().min() and a.numpy().max() < 10
    b = tg.randint(5, 8, (3, 4))
    assert b.shape == (3, 4) and set(np.unique(b.numpy())) <= {5, 6, 7}
    assert tg.randint(3, size=(2,)).shape == (2,)
    assert tg.randint(low=1, high=3, size=(2,)).shape == (2,)
    with pytest.raises(TypeError, match="size"):
        tg.randint(0, 10)


def test_format_like_torch():
    for v in (1.234567, -3.0):
        assert f"{tg.tensor(v):.4f}" == f"{torch.tensor(v):.4f}"
        assert f"{tg.tensor(v, requires_grad=True):.2e}" == f"{torch.tensor(v, requires_grad=True):.2e}"
    assert f"{tg.tensor(7)}" == "7"
    with pytest.raises(TypeError):
        f"{tg.ones(3):.2f}"


def test_return_type_names():
    x = tg.randn(4, 5)
    assert type(tg.topk(x, 2)).__name__ == "topk" and type(x.max(1)).__name__ == "max"
    assert type(x.min(1)).__name__ == "min"
    assert tg.topk(x, 2).values.shape == (4, 2)


def test_stride_and_contiguity():
    x = tg.randn(2, 3, 4)
    assert x.stride() == torch.randn(2, 3, 4).stride() and x.stride(1) == 4
    assert x.is_contiguous() and x.pin_memory() is x and x.get_device() == -1
    assert x.type() == "torch.FloatTensor" and x.type(tg.float64).dtype == tg.float64


def test_as_torch_aliases_submodules(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import torch\nfrom torch import nn\nimport torch.nn.functional as F\n"
                      "from torch.utils.data import DataLoader\nimport sys\n"
                      "print(torch.__name__, nn.__name__, F.__name__, DataLoader.__module__, sys.argv[1:])\n")
    out = subprocess.run([sys.executable, "-m", "tracegrad.as_torch", str(script), "--x", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:4] == ["tracegrad", "tracegrad.nn", "tracegrad.nn.functional",
                                      "tracegrad.utils.data.dataloader"]
    assert "'--x', '1'" in out.stdout
