"""tg.cuda / tg.accelerator / tg.backends answer like PyTorch's, and say "no GPU" without one."""
import numpy as np
import pytest

import tracegrad as tg
from tests.conftest import cuda_available
from tests.fake_cupy import fake_cuda  # noqa: F401  (a CuPy stand-in: CUDA buffers on the CPU)


def test_cuda_queries_without_gpu_or_with():
    avail = tg.cuda.is_available()
    assert avail == cuda_available()
    assert tg.accelerator.is_available() == avail
    assert tg.cuda.device_count() == (tg.cuda.device_count() if avail else 0)
    tg.cuda.synchronize()
    tg.cuda.manual_seed(3)
    tg.cuda.manual_seed_all(3)
    tg.cuda.empty_cache()
    tg.cuda.reset_peak_memory_stats()
    assert tg.cuda.max_memory_allocated() >= tg.cuda.memory_allocated() >= 0
    assert tg.cuda.memory_reserved() >= 0
    if avail:
        assert isinstance(tg.cuda.get_device_name(0), str)
        assert tg.accelerator.current_accelerator().type == "cuda"
    else:
        assert tg.accelerator.current_accelerator() is None
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            tg.cuda.get_device_name(0)


def test_cuda_manual_seed_seeds_the_generator():
    tg.cuda.manual_seed(5)
    a = tg.randn(3)
    tg.manual_seed(5)
    assert (a.numpy() == tg.randn(3).numpy()).all()


def test_backend_flags_are_accepted():
    tg.backends.cuda.matmul.allow_tf32 = True
    tg.backends.cudnn.allow_tf32 = True
    tg.backends.cudnn.benchmark = True
    tg.backends.cudnn.deterministic = True
    assert tg.backends.cuda.matmul.allow_tf32 and tg.backends.cudnn.benchmark
    assert tg.backends.mps.is_available() is False


def test_mps_is_a_clear_error():
    with pytest.raises(ValueError, match="'mps' is not supported.*use 'cpu'"):
        tg.ones(2).to("mps")
    with pytest.raises(ValueError, match="not supported"):
        tg.zeros(2, device="mps")


def test_cuda_amp_grad_scaler_disabled_on_cpu():
    s = tg.cuda.amp.GradScaler(enabled=False)
    loss = tg.tensor(2.0)
    assert s.scale(loss).item() == 2.0


@pytest.mark.parametrize("dtype, value", [("bfloat16", 1.7), ("bfloat16", 0.0), ("float32", -2.5),
                                          ("float32", 0), ("int64", 3), ("int64", 0)])
def test_full_on_cuda_fills_the_result_dtype_at_once(fake_cuda, monkeypatch, dtype, value):
    """A bf16 KV cache of half the GPU is one `zeros`: it must not be computed in fp32 and rounded
    after (six times the memory), so the rounding helper is not reached at all."""
    def no_rounding(x):
        raise AssertionError("full rounded an fp32 buffer")
    monkeypatch.setattr(fake_cuda, "round_bf16", no_rounding)
    dt = getattr(tg, dtype)
    t = tg.full((3, 5), value, dtype=dt, device="cuda")
    assert t.device == "cuda:0" and t.dtype == dt and t.shape == (3, 5)
    np.testing.assert_array_equal(t.to("cpu").numpy(), tg.full((3, 5), value, dtype=dt).numpy())
