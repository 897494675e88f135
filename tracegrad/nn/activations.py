"""More activations, functional and as modules, with PyTorch's formulas and defaults:
`softplus` (`Softplus`), `hardtanh` (`Hardtanh`), `relu6` (`ReLU6`), `elu` (`ELU`), `mish`
(`Mish`), `hardswish` (`Hardswish`), `hardsigmoid` (`Hardsigmoid`), `logsigmoid` (`LogSigmoid`),
`glu` (`GLU`), `softsign` (`Softsign`).
"""
from __future__ import annotations

from ..functions import where
from ..tensor import Tensor
from .module import Module


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + exp(beta x)) / beta; linear where beta x > threshold (as PyTorch)."""
    bx = input * beta
    soft = (bx.clamp(min=0) + (1.0 + (-bx.abs()).exp()).log()) * (1.0 / beta)
    return where(bx > threshold, input, soft)


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor:
    return input.clamp(min=min_val, max=max_val)


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    return input.clamp(min=0.0, max=6.0)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    return where(input > 0, input, ((input.clamp(max=0)).exp() - 1.0) * alpha)


def mish(input: Tensor, inplace: bool = False) -> Tensor:
    return input * softplus(input).tanh()


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    return (input * (1.0 / 6.0) + 0.5).clamp(min=0.0, max=1.0)


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    return input * hardsigmoid(input)


def logsigmoid(input: Tensor) -> Tensor:
    return -softplus(-input)


def softsign(input: Tensor) -> Tensor:
    return input / (1.0 + input.abs())


def glu(input: Tensor, dim: int = -1) -> Tensor:
    a, b = input.chunk(2, dim)
    return a * b.sigmoid()


def _module(name: str, fn, params: dict, doc: str):
    def __init__(self, *args, **kwargs):
        Module.__init__(self)
        vals = dict(params)
        vals.update(zip(params, args))
        vals.update(kwargs)
        self.__dict__["_opts"] = {k: v for k, v in vals.items() if k != "inplace"}
        for k, v in vals.items():
            setattr(self, k, v)

    def forward(self, input):
        return fn(input, **self.__dict__["_opts"])

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.__dict__["_opts"].items())

    return type(name, (Module,), {"__init__": __init__, "forward": forward, "extra_repr": extra_repr,
                                  "__doc__": doc})


Softplus = _module("Softplus", softplus, {"beta": 1.0, "threshold": 20.0}, "log(1 + exp(beta x)) / beta.")
Hardtanh = _module("Hardtanh", hardtanh, {"min_val": -1.0, "max_val": 1.0, "inplace": False}, "clamp(x, min, max).")
ReLU6 = _module("ReLU6", relu6, {"inplace": False}, "clamp(x, 0, 6).")
ELU = _module("ELU", elu, {"alpha": 1.0, "inplace": False}, "x if x > 0 else alpha (exp(x) - 1).")
Mish = _module("Mish", mish, {"inplace": False}, "x tanh(softplus(x)).")
Hardswish = _module("Hardswish", hardswish, {"inplace": False}, "x hardsigmoid(x).")
Hardsigmoid = _module("Hardsigmoid", hardsigmoid, {"inplace": False}, "clamp(x / 6 + 1/2, 0, 1).")
LogSigmoid = _module("LogSigmoid", logsigmoid, {}, "log(sigmoid(x)).")
Softsign = _module("Softsign", softsign, {}, "x / (1 + |x|).")
GLU = _module("GLU", glu, {"dim": -1}, "a * sigmoid(b), the halves of x along dim.")
