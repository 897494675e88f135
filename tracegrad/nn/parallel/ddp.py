"""`DistributedDataParallel`: data parallelism over the ranks of the process group, with
PyTorch DDP's semantics.

    tg.distributed.init_process_group()             # under `tracegrad launch -n 2 train.py`
    model = DistributedDataParallel(GPT(config))    # rank 0's weights on every rank
    loss = model(x, y)[1]; loss.backward()          # x, y: this rank's batch; grads: the mean over ranks

Every rank passes its local batch; after `backward()` each parameter's `.grad` is the mean over
the ranks, so every rank applies the same update. Inside `@tg.compile` the wrapper registers
itself with the trace and the `dp` stage (`ir/passes/parallel/dp.py`) inserts the all_reduces
right after each gradient, packed into buckets sent as soon as they are full; eagerly the
gradients are averaged, in one flat bucket, right after `backward()` (also when the forward is
a compiled call whose outputs are differentiated outside it). `no_sync()` skips the
averaging (gradient accumulation: the gradients sum locally, and the first backward outside
`no_sync` averages the sum).
"""
from __future__ import annotations

import contextlib

from ... import distributed, trace
from ...autograd import after_backward, no_grad
from ...dispatch import grad_enabled
from ..module import Module
from ... import functions


class DistributedDataParallel(Module):
    def __init__(self, module: Module, device_ids=None, output_device=None, dim: int = 0,
                 broadcast_buffers: bool = True, process_group=None, bucket_cap_mb: float = 25,
                 find_unused_parameters: bool = False, gradient_as_bucket_view: bool = False,
                 static_graph: bool = False, **_ignored):
        super().__init__()
        self.module = module
        ranks = getattr(process_group, "ranks", process_group)
        self.group = tuple(range(distributed.get_world_size())) if ranks is None else tuple(ranks)
        self.bucket_cap_mb = bucket_cap_mb
        self.require_backward_grad_sync = True
        self._sync_params_and_buffers(broadcast_buffers)

    def _sync_params_and_buffers(self, buffers: bool) -> None:
        """Every rank starts from the first rank's parameters (and buffers), as DDP's constructor does."""
        if len(self.group) == 1:
            return
        tensors = list(self.module.parameters()) + (list(self.module.buffers()) if buffers else [])
        with no_grad():
            for t in tensors:
                distributed.broadcast(t, src=self.group[0], group=self.group)

    def forward(self, *args, **kwargs):
        tr = trace.current()
        sync = self.require_backward_grad_sync and len(self.group) > 1
        if tr is not None:       # the dp stage of the compiled step averages these parameters' gradients
            tr.add_guard(lambda s=self.require_backward_grad_sync: self.require_backward_grad_sync == s,
                         "DistributedDataParallel.no_sync() was entered or left")
            if sync:
                tr.parallel["dp"] = (self.group, [p for p in self.module.parameters() if p.requires_grad])
                # a compiled forward whose outputs the caller differentiates eagerly: average then
                tr.on_backward_call.append(lambda: after_backward(self._average_gradients))
        elif sync and grad_enabled():
            after_backward(self._average_gradients)
        return self.module(*args, **kwargs)

    def _average_gradients(self) -> None:
        """The eager path: one flat all_reduce of every gradient, then each reads its slice."""
        params = [p for p in self.module.parameters() if p.grad is not None]
        if not params:
            return
        with no_grad():
            flat = functions.cat([p.grad.reshape(-1) for p in params])
            distributed.all_reduce(flat, op=distributed.ReduceOp.AVG, group=self.group)
            start = 0
            for p in params:
                n = p.grad.numel()
                p.grad = flat[start:start + n].reshape(p.grad.shape)
                start += n

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside accumulate gradients locally, without communication."""
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
