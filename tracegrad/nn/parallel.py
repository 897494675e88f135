"""`nn.parallel.DistributedDataParallel` and `nn.DataParallel` for a one-process run: a wrapper
whose forward is the module's, as PyTorch's DDP is with a world of one rank.

    model = DistributedDataParallel(model, device_ids=[0])
    raw = model.module                       # the wrapped model; state_dict keys gain "module."

Gradient averaging across ranks lives in tracegrad's data parallelism (`tg.compile(step,
mesh=tg.Mesh(dp=N))`, which all-reduces gradients in the step); with one rank there is nothing
to average, so `no_sync()` and `require_backward_grad_sync` are accepted and change nothing.
"""
from __future__ import annotations

import contextlib

from .module import Module
from ..distributed import get_world_size


class DistributedDataParallel(Module):
    def __init__(self, module: Module, device_ids=None, output_device=None, dim: int = 0,
                 broadcast_buffers: bool = True, process_group=None, bucket_cap_mb=None,
                 find_unused_parameters: bool = False, check_reduction: bool = False,
                 gradient_as_bucket_view: bool = False, static_graph: bool = False, **kwargs):
        if get_world_size() != 1:
            raise RuntimeError("DistributedDataParallel here wraps a one-rank run; for several ranks compile "
                               "the step with mesh=tg.Mesh(dp=N)")
        super().__init__()
        self.module = module
        self.device_ids = device_ids
        self.require_backward_grad_sync = True

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Skip the gradient all-reduce inside the block (one rank: there is none to skip)."""
        old, self.require_backward_grad_sync = self.require_backward_grad_sync, False
        try:
            yield
        finally:
            self.require_backward_grad_sync = old


class DataParallel(Module):
    """One-device `nn.DataParallel`: the module itself, under `.module`."""

    def __init__(self, module: Module, device_ids=None, output_device=None, dim: int = 0):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
