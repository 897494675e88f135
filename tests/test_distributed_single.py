"""torch.distributed's process-group API and DDP work in a one-process run, as scripts use them."""
import numpy as np
import pytest

import tracegrad as tg
import tracegrad.distributed as dist
from tracegrad.nn.parallel import DistributedDataParallel as DDP


def test_process_group_in_one_process():
    assert dist.is_available() and not dist.is_initialized()
    dist.init_process_group(backend="gloo")
    try:
        assert dist.is_initialized() and dist.get_backend() == "gloo"
        assert dist.get_rank() == 0 and dist.get_world_size() == 1
        t = tg.tensor([1.0, 2.0])
        out = dist.all_reduce(t, op=dist.ReduceOp.SUM)
        np.testing.assert_array_equal(t.numpy(), [1.0, 2.0])
        if out is not None:                      # the functional form returns the reduced tensor
            np.testing.assert_array_equal(out.numpy(), [1.0, 2.0])
        dist.barrier()
        got = [tg.zeros(2)]
        dist.all_gather(got, t)
        np.testing.assert_array_equal(got[0].numpy(), [1.0, 2.0])
    finally:
        dist.destroy_process_group()
    assert not dist.is_initialized()


def test_init_with_larger_world_without_a_launcher_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(RuntimeError, match="rank 1 of 4.*tracegrad launch"):
        dist.init_process_group("gloo")
    assert not dist.is_initialized()


def test_ddp_wraps_module_and_trains():
    tg.manual_seed(0)
    inner = tg.nn.Linear(4, 2)
    model = DDP(inner, device_ids=[0])
    assert model.module is inner
    assert list(model.state_dict()) == ["module.weight", "module.bias"]
    x = tg.randn(3, 4)
    np.testing.assert_array_equal(model(x).numpy(), inner(x).numpy())
    with model.no_sync():
        model(x).sum().backward()
    assert inner.weight.grad is not None
    assert tg.nn.parallel.DistributedDataParallel is DDP
    assert isinstance(tg.nn.DataParallel(inner).module, tg.nn.Linear)
