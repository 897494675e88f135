"""SGD with momentum, dampening, Nesterov and weight decay: PyTorch's update, step for step.

    g = grad + weight_decay * p
    buf = g (first step), else momentum * buf + (1 - dampening) * g
    g = g + momentum * buf (nesterov), else buf
    p = p - lr * g
"""
from __future__ import annotations

from .. import trace as _trace
from ..creation import tensor as _tensor, zeros_like
from ..functions import where
from ..ir.types import float32
from .optimizer import Optimizer, required


class SGD(Optimizer):
    live = ("lr", "momentum", "dampening", "weight_decay")

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False, foreach=None,
                 differentiable: bool = False, fused=None):
        if lr is not required and lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize, foreach=foreach,
                                      differentiable=differentiable, fused=fused))

    def _signature(self, group) -> tuple:
        return (group["momentum"] != 0, group["dampening"] != 0, group["nesterov"], group["maximize"])

    def _init_state(self, p, group) -> dict:
        if group["momentum"] == 0:
            return {}
        # NOTE: a zero buffer plus a step count replaces PyTorch's "buf is None on the first step" branch,
        # which a compiled step could not take differently on later calls.
        return {"momentum_buffer": zeros_like(p), "step": _tensor(0.0, dtype=float32, device=p._type.device)}

    def _update(self, p, grad, state, h, group) -> None:
        g = -grad if group["maximize"] else grad
        g = g + p * h["weight_decay"]
        if group["momentum"] != 0:
            if state.get("momentum_buffer") is None:   # momentum was 0 until now
                with _trace.suspended():
                    state.update(self._init_state(p, group))
            if "step" not in state:   # a PyTorch state dict has only the buffer: it is past its first step
                with _trace.suspended():
                    state["step"] = _tensor(1.0, dtype=float32, device=p._type.device)
            buf, step = state["momentum_buffer"], state["step"]
            step.add_(1.0)
            if group["dampening"] != 0:
                # first step: buf = g exactly (the buffer is zero and the factor is 1)
                buf.mul_(h["momentum"]).add_(g * where(step > 1.0, 1.0 - h["dampening"], 1.0))
            else:
                buf.mul_(h["momentum"]).add_(g)
            g = g + buf * h["momentum"] if group["nesterov"] else buf
        p.sub_(g * h["lr"])
