"""Adam and AdamW: PyTorch's update (single-tensor path), step for step, with bias correction.

    step += 1
    p = p * (1 - lr * weight_decay)              (AdamW)   |   g = g + weight_decay * p   (Adam)
    m = lerp(m, g, 1 - beta1);   v = beta2 v + (1 - beta2) g^2
    p = p - lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
(Kingma & Ba 2015, Alg. 1; Loshchilov & Hutter 2019 for the decoupled decay.)
"""
from __future__ import annotations

import numpy as np

from .. import trace as _trace
from ..creation import tensor as _tensor, zeros_like
from ..ir.types import float32, float64
from .optimizer import Optimizer


class Adam(Optimizer):
    live = ("lr", "betas", "eps", "weight_decay")
    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 amsgrad: bool = False, *, foreach=None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused=None, decoupled_weight_decay: bool = False):
        if not 0.0 <= float(lr):
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        for i, b in enumerate(betas):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {b}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, foreach=foreach, capturable=capturable,
                                      differentiable=differentiable, fused=fused,
                                      decoupled_weight_decay=decoupled_weight_decay or self._decoupled))

    def _signature(self, group) -> tuple:
        return (group["amsgrad"], group["maximize"], group["decoupled_weight_decay"])

    def _init_state(self, p, group) -> dict:
        state = {"step": _tensor(0.0, dtype=float32, device=p._type.device),
                 "exp_avg": zeros_like(p), "exp_avg_sq": zeros_like(p)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = zeros_like(p)
        return state

    def _update(self, p, grad, state, h, group) -> None:
        if _host_update(p, grad, state, h, group):
            return
        lr, (beta1, beta2), eps, wd = h["lr"], h["betas"], h["eps"], h["weight_decay"]
        g = -grad if group["maximize"] else grad
        step = state["step"]
        step.add_(1.0)
        if group["decoupled_weight_decay"]:
            p.mul_(1.0 - lr * wd)
        else:
            g = g + p * wd
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.add_((g - m) * (1.0 - beta1))                       # m.lerp_(g, 1 - beta1)
        v.mul_(beta2).add_(g * (1.0 - beta2) * g)             # v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        n = step.to(float64)
        bias_correction1 = 1.0 - beta1 ** n
        bias_correction2_sqrt = (1.0 - beta2 ** n).sqrt()
        if group["amsgrad"]:
            vmax = state["max_exp_avg_sq"]
            vmax.copy_(vmax.maximum(v))
            v = vmax
        denom = v.sqrt() / bias_correction2_sqrt + eps
        p.add_(m * (-(lr / bias_correction1)) / denom)        # p.addcdiv_(m, denom, value=-step_size)


def _plain_host(t, dtype) -> bool:
    return type(t._data) is np.ndarray and t._data.dtype == dtype and t._base is None and "_view" not in t.__dict__


def _host_update(p, grad, state, h, group) -> bool:
    """The update above in numpy on host buffers, the same operations in the same dtypes (fp64
    hyperparameters rounded to fp32 where they meet fp32 tensors, as the tensor ops promote), so
    eager steps agree with compiled ones. False where it does not apply (a trace, amsgrad, maximize,
    non-fp32 or viewed tensors): the tensor ops above run instead.

    NOTE: in eager mode the tensor ops cost ~25 dispatches per parameter; this is a fifth of an
    eager demo-GPT step on one CPU thread."""
    if _trace.current() is not None or group["amsgrad"] or group["maximize"]:
        return False
    step, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    if not all(_plain_host(t, f32) for t in (p, grad, m, v, step)):
        return False
    hs = (h["lr"], *h["betas"], h["eps"], h["weight_decay"])
    if not all(_plain_host(t, f64) and t._data.ndim == 0 for t in hs):
        return False
    lr, beta1, beta2, eps, wd = (t._data for t in hs)
    g, pd, md, vd = grad._data, p._data, m._data, v._data
    one = np.float64(1.0)
    sd = np.add(step._data, np.float32(1.0))
    if group["decoupled_weight_decay"]:
        pd = np.multiply(pd, (one - lr * wd).astype(f32))
    else:
        g = np.add(g, np.multiply(pd, wd.astype(f32)))
    md = np.add(md, np.multiply(np.subtract(g, md), (one - beta1).astype(f32)))
    vd = np.add(np.multiply(vd, beta2.astype(f32)), np.multiply(np.multiply(g, (one - beta2).astype(f32)), g))
    n = sd.astype(f64)
    bias_correction1 = one - np.power(beta1, n)
    bias_correction2_sqrt = np.sqrt(one - np.power(beta2, n))
    denom = np.add(np.divide(np.sqrt(vd), bias_correction2_sqrt.astype(f32)), eps.astype(f32))
    pd = np.add(pd, np.divide(np.multiply(md, np.negative(lr / bias_correction1).astype(f32)), denom))
    # NOTE: numpy gives 0-d results as scalars; tensors hold arrays
    step._data, m._data, v._data, p._data = (np.asarray(a) for a in (sd, md, vd, pd))
    return True


class AdamW(Adam):
    """Adam with decoupled weight decay (default weight_decay=1e-2, as in PyTorch)."""
    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 amsgrad: bool = False, *, maximize: bool = False, foreach=None, capturable: bool = False,
                 differentiable: bool = False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)
