"""`tracegrad.nn.utils`: gradient clipping.

    total = tg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)   # a 0-d tensor

Nothing here reads a value back to Python, so it works inside `@tg.compile`: the scale factor
`min(1, max_norm / (norm + 1e-6))` is computed on the device and every gradient is multiplied
by it (a no-op factor of 1 when the norm is small), exactly as PyTorch does.
"""
from __future__ import annotations

import math

from .. import trace as _trace
from ..autograd import no_grad
from ..creation import zeros
from ..functions import amax, stack
from ..tensor import Tensor
from ..functions import cat


def _grads_of(parameters) -> list:
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p for p in params if p.grad is not None]


def _norm(g: Tensor, p: float) -> Tensor:
    if p == math.inf:
        return g.abs().amax()
    return g.float().norm(p)


@no_grad()
def get_total_norm(tensors, norm_type: float = 2.0) -> Tensor:
    """The norm of the tensors' norms (the norm of all of them concatenated)."""
    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    if not tensors:
        return zeros(())
    norms = stack([_norm(t, float(norm_type)) for t in tensors])
    return amax(norms) if float(norm_type) == math.inf else norms.norm(float(norm_type))


@no_grad()
def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach=None) -> Tensor:
    """Scale the gradients so their total norm is at most max_norm; returns the total norm before clipping."""
    params = _grads_of(parameters)
    if not params:
        return zeros(())
    total = get_total_norm([p.grad for p in params], norm_type)
    if error_if_nonfinite and _trace.current() is None and not math.isfinite(total.item()):
        raise RuntimeError(f"The total norm of order {float(norm_type)} for gradients from `parameters` is "
                           "non-finite, so it cannot be clipped. To disable this error and scale the gradients "
                           "by the non-finite norm anyway, set `error_if_nonfinite=False`")
    coef = (float(max_norm) / (total + 1e-6)).clamp(max=1.0)
    for p in params:
        # NOTE: rebinding p.grad (not g.mul_) so a compiled step writes the clipped gradient back to
        # whatever tensor is p.grad at run time, even when the gradient came from outside the step.
        p.grad = p.grad * coef.to(p.grad.dtype)
    return total


@no_grad()
def clip_grad_value_(parameters, clip_value: float, foreach=None) -> None:
    for p in _grads_of(parameters):
        p.grad = p.grad.clamp(-float(clip_value), float(clip_value))


def parameters_to_vector(parameters) -> Tensor:
    return cat([p.reshape(-1) for p in parameters])
