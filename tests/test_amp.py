"""`tg.autocast`: matmuls in half precision, the rest in fp32; PyTorch's spellings and defaults."""
from __future__ import annotations

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.amp import autocast_dtype


@pytest.mark.parametrize("args, kwargs, want", [
    ((tg.bfloat16,), {}, "bfloat16"),
    (("float16",), {}, "float16"),
    (("cuda",), {}, "float16"),                       # PyTorch's default on CUDA
    (("cpu",), {}, "bfloat16"),                       # and on the CPU
    (("cuda",), {"dtype": tg.bfloat16}, "bfloat16"),
    ((), {"device_type": "cuda", "dtype": tg.bfloat16}, "bfloat16"),
    ((tg.bfloat16,), {"enabled": False}, None),
])
def test_autocast_spellings(args, kwargs, want):
    assert autocast_dtype() is None
    with tg.autocast(*args, **kwargs):
        got = autocast_dtype()
        assert (got.name if got is not None else None) == want
    assert autocast_dtype() is None


def test_autocast_rejects_two_dtypes():
    with pytest.raises(TypeError, match="dtype given twice"):
        with tg.autocast(tg.float16, dtype=tg.bfloat16):
            pass


def test_matmul_runs_in_bf16_and_the_loss_in_fp32():
    import tracegrad.nn.functional as F
    rng = np.random.default_rng(0)
    x = tg.tensor(rng.standard_normal((4, 8)).astype(np.float32))
    w = tg.tensor(rng.standard_normal((8, 3)).astype(np.float32))
    with tg.autocast(tg.bfloat16):
        y = x @ w
        loss = F.cross_entropy(y, tg.tensor(np.array([0, 1, 2, 0])))
    assert y.dtype == tg.bfloat16 and loss.dtype == tg.float32 and w.dtype == tg.float32
    np.testing.assert_allclose(y.float().numpy(), x.numpy() @ w.numpy(), rtol=2e-2, atol=2e-2)
