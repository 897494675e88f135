"""`tracegrad.nn.init`: in-place initializers, as in PyTorch, drawing from tg's global RNG.

    w = nn.Parameter(tg.empty(128, 64))
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))      # what nn.Linear does
    nn.init.normal_(w, mean=0.0, std=0.02)           # GPT-2

Each runs under no_grad and rebinds the tensor's value (parameters keep their identity).
"""
from __future__ import annotations

import math

from ..autograd import no_grad
from ..functions import where
from ..random import rand, randn
from ..tensor import Tensor
from ..creation import eye


def calculate_gain(nonlinearity: str, param=None) -> float:
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    if tensor.ndim < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions")
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fan(tensor: Tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _set(tensor: Tensor, value: Tensor) -> Tensor:
    with no_grad():
        return tensor._assign(value)


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, generator=None) -> Tensor:
    u = rand(*tensor.shape, dtype=tensor.dtype, device=tensor._type.device, generator=generator)
    return _set(tensor, u * (b - a) + a)


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator=None) -> Tensor:
    z = randn(*tensor.shape, dtype=tensor.dtype, device=tensor._type.device, generator=generator) * std
    return _set(tensor, z + mean if mean else z)


def trunc_normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0,
                  generator=None) -> Tensor:
    """Normal(mean, std) restricted to [a, b], by redrawing the samples outside (eager only)."""
    if not a < b:
        raise ValueError("trunc_normal_: need a < b")
    dev = tensor._type.device
    with no_grad():
        x = randn(*tensor.shape, dtype=tensor.dtype, device=dev, generator=generator) * std + mean
        for _ in range(1000):
            bad = (x < a) | (x > b)
            if not bad.any().item():
                break
            fresh = randn(*tensor.shape, dtype=tensor.dtype, device=dev, generator=generator) * std + mean
            x = where(bad, fresh, x)
        x = x.clamp(a, b)
    return _set(tensor, x)


def constant_(tensor: Tensor, val: float) -> Tensor:
    with no_grad():
        return tensor.fill_(val)


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0.0 if tensor.dtype.is_floating else 0)


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0 if tensor.dtype.is_floating else 1)


def eye_(tensor: Tensor) -> Tensor:
    if tensor.ndim != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    return _set(tensor, eye(*tensor.shape, dtype=tensor.dtype, device=tensor._type.device))


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = math.sqrt(3.0) * gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)), generator)


def kaiming_uniform_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     generator=None) -> Tensor:
    if 0 in tensor.shape:
        return tensor
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    generator=None) -> Tensor:
    if 0 in tensor.shape:
        return tensor
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode)), generator)


# PyTorch's deprecated spellings
uniform, normal, constant = uniform_, normal_, constant_
xavier_uniform, xavier_normal, kaiming_uniform, kaiming_normal = \
    xavier_uniform_, xavier_normal_, kaiming_uniform_, kaiming_normal_
