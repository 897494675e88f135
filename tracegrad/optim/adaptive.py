"""RMSprop, Adagrad and Adadelta: per-coordinate adaptive steps, PyTorch's updates step for step.

    RMSprop:  v = alpha v + (1 - alpha) g^2;  p -= lr g / (sqrt(v) + eps)       (centered: v - mean(g)^2)
    Adagrad:  s += g^2;  p -= lr / (1 + (step - 1) lr_decay) * g / (sqrt(s) + eps)
    Adadelta: v = rho v + (1 - rho) g^2;  d = sqrt(u + eps) / sqrt(v + eps) g;
              u = rho u + (1 - rho) d^2;  p -= lr d                              (Zeiler 2012, Alg. 1)
"""
from __future__ import annotations

from ..creation import full_like, tensor as _tensor, zeros_like
from ..ir.types import float32
from .optimizer import Optimizer


def _check(**values) -> None:
    for name, v in values.items():
        if not 0.0 <= v:
            raise ValueError(f"Invalid {name} value: {v}")


def _step(p):
    return _tensor(0.0, dtype=float32, device=p._type.device)


class RMSprop(Optimizer):
    live = ("lr", "alpha", "eps", "weight_decay", "momentum")

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False, capturable: bool = False, foreach=None,
                 maximize: bool = False, differentiable: bool = False):
        _check(learning_rate=lr, epsilon=eps, momentum=momentum, weight_decay=weight_decay, alpha=alpha)
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, capturable=capturable, foreach=foreach, maximize=maximize,
                                      differentiable=differentiable))

    def _signature(self, group) -> tuple:
        return (group["centered"], group["momentum"] != 0, group["maximize"])

    def _init_state(self, p, group) -> dict:
        state = {"step": _step(p), "square_avg": zeros_like(p)}
        if group["momentum"] != 0:
            state["momentum_buffer"] = zeros_like(p)
        if group["centered"]:
            state["grad_avg"] = zeros_like(p)
        return state

    def _update(self, p, grad, state, h, group) -> None:
        g = -grad if group["maximize"] else grad
        state["step"].add_(1.0)
        g = g + p * h["weight_decay"]
        alpha = h["alpha"]
        v = state["square_avg"]
        v.mul_(alpha).add_(g * g * (1.0 - alpha))
        if group["centered"]:
            ga = state["grad_avg"]
            ga.add_((g - ga) * (1.0 - alpha))
            avg = (v - ga * ga).sqrt() + h["eps"]
        else:
            avg = v.sqrt() + h["eps"]
        if group["momentum"] != 0:
            buf = state["momentum_buffer"]
            buf.mul_(h["momentum"]).add_(g / avg)
            p.sub_(buf * h["lr"])
        else:
            p.sub_(g / avg * h["lr"])


class Adagrad(Optimizer):
    live = ("lr", "lr_decay", "weight_decay", "eps")

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, foreach=None, *,
                 maximize: bool = False, differentiable: bool = False, fused=None):
        _check(learning_rate=lr, lr_decay=lr_decay, weight_decay=weight_decay,
               initial_accumulator_value=initial_accumulator_value, epsilon=eps)
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps,
                                      initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable, fused=fused))

    def _signature(self, group) -> tuple:
        return (group["maximize"],)

    def _init_state(self, p, group) -> dict:
        return {"step": _step(p), "sum": full_like(p, group["initial_accumulator_value"])}

    def _update(self, p, grad, state, h, group) -> None:
        g = -grad if group["maximize"] else grad
        step = state["step"]
        step.add_(1.0)
        g = g + p * h["weight_decay"]
        clr = h["lr"] / ((step.to(h["lr"].dtype) - 1.0) * h["lr_decay"] + 1.0)
        s = state["sum"]
        s.add_(g * g)
        p.sub_(g / (s.sqrt() + h["eps"]) * clr)


class Adadelta(Optimizer):
    live = ("lr", "rho", "eps", "weight_decay")

    def __init__(self, params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
                 foreach=None, *, capturable: bool = False, maximize: bool = False, differentiable: bool = False):
        _check(learning_rate=lr, epsilon=eps, weight_decay=weight_decay)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, foreach=foreach,
                                      capturable=capturable, maximize=maximize, differentiable=differentiable))

    def _signature(self, group) -> tuple:
        return (group["maximize"],)

    def _init_state(self, p, group) -> dict:
        return {"step": _step(p), "square_avg": zeros_like(p), "acc_delta": zeros_like(p)}

    def _update(self, p, grad, state, h, group) -> None:
        g = -grad if group["maximize"] else grad
        state["step"].add_(1.0)
        g = g + p * h["weight_decay"]
        rho, eps = h["rho"], h["eps"]
        v, u = state["square_avg"], state["acc_delta"]
        v.mul_(rho).add_(g * g * (1.0 - rho))
        delta = (u + eps).sqrt() / (v + eps).sqrt() * g
        u.mul_(rho).add_(delta * delta * (1.0 - rho))
        p.sub_(delta * h["lr"])
