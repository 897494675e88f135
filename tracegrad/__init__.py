"""tracegrad: a deep-learning compiler with a PyTorch-shaped API.

    import tracegrad as tg
    x = tg.randn(4, 8, requires_grad=True)
    loss = (x @ x.T).tanh().sum()
    loss.backward()                       # eager, on numpy

    @tg.compile
    def step(x):                          # traced once, then replayed as generated code
        return (x @ x.T).tanh().sum()
    print(step(x)); print(step.ir("traced"))
"""
from __future__ import annotations

from .ir import types as _types
from .ir.types import DType as dtype  # noqa: F401  (tg.dtype is the dtype class, as in torch)
from .tensor import Tensor, Size, Device, device
from . import ops
from .amp import autocast
from .autograd import enable_grad, grad, inference_mode, is_grad_enabled, is_inference_mode_enabled, no_grad, value_and_grad
from .autograd import gradients as _gradients
from .compile import CompiledFunction, compile, last_graphs
from . import distributed
from . import distributed_compat as _dist_compat
for _name in _dist_compat.NAMES:     # the one-process names the distributed runtime does not define
    if not hasattr(distributed, _name):
        setattr(distributed, _name, getattr(_dist_compat, _name))
del _name
from . import accelerator, backends, cuda  # noqa: F401  (torch.accelerator, torch.backends, torch.cuda)
from .distributed import Mesh
from .creation import (arange, as_tensor, empty, empty_like, eye, from_numpy, full, full_like, get_default_dtype,
                       linspace, ones, ones_like, set_default_dtype, tensor, zeros, zeros_like)
from .dispatch import set_grad_enabled
from .serialization import load, save
from .surface import missing as _missing
from .errors import DataDependentError, ShapeError, TracegradError, UnsupportedError
from .functions import (all, amax, amin, any, argmax, argmin, cat, clamp, logsumexp, matmul, max, mean, min, std,
                        stack, sum, var, where)
from .random import (Generator, get_rng_state, manual_seed, multinomial, normal, rand, rand_like, randint, randn,
                     randn_like, randperm, seed, set_rng_state, topk)
from .einsum import einsum
from .threads import get_num_interop_threads, get_num_threads, set_num_interop_threads, set_num_threads
from . import testing  # noqa: F401  (tg.testing.assert_close)

float32 = float = _types.float32
float64 = double = _types.float64
float16 = half = _types.float16
bfloat16 = _types.bfloat16
int64 = long = _types.int64
int32 = int = _types.int32
int16 = short = _types.int16
int8 = _types.int8
uint8 = _types.uint8
bool = _types.bool_

__version__ = "0.1.0"


class autograd:  # noqa: N801  (a namespace, like torch.autograd)
    from .autograd_function import Function, FunctionCtx, once_differentiable
    grad = staticmethod(_gradients)
    backward = staticmethod(lambda tensors, grad_tensors=None, **kw: (tensors if isinstance(tensors, Tensor)
                                                                      else tensors[0]).backward(grad_tensors, **kw))

    class function:  # noqa: N801  (torch.autograd.function.FunctionCtx, once_differentiable)
        from .autograd_function import Function, FunctionCtx, once_differentiable


def _elementwise(op):
    def fn(x, *args, **kwargs):
        return getattr(x, op)(*args, **kwargs)
    fn.__name__ = op
    return fn


for _op in ("exp", "log", "sqrt", "rsqrt", "tanh", "sin", "cos", "abs", "sign", "sigmoid", "erf", "relu", "neg",
            "floor", "isnan", "reshape", "permute", "transpose", "unsqueeze", "squeeze", "flatten", "tril", "triu",
            "softmax", "log_softmax", "gather", "index_select", "masked_fill", "split", "chunk", "maximum",
            "minimum", "pow", "square", "norm", "clone", "numel", "exp2", "log2", "lerp", "addcmul", "addcdiv",
            # the methods of tensor_search, tensor_scan, tensor_compare, tensor_scatter and einsum.py
            "sort", "argsort", "msort", "nonzero", "argwhere", "count_nonzero", "unique", "cumsum", "cumprod", "prod",
            "flip", "fliplr", "flipud", "roll", "repeat_interleave", "tile", "diff", "ge", "le", "greater_equal",
            "less_equal", "greater", "less", "isclose", "allclose", "equal", "round", "ceil", "trunc", "fix", "frac",
            "isinf", "isfinite", "isposinf", "isneginf", "nan_to_num", "log1p", "expm1", "clamp_min", "clamp_max",
            "logical_and", "logical_or", "logical_xor", "logical_not", "log10", "remainder", "scatter", "scatter_add",
            "index_put", "index_add", "index_fill", "masked_select", "narrow", "select", "movedim", "moveaxis",
            "swapaxes", "mm", "bmm", "mv", "dot", "outer", "addmm", "baddbmm", "eq", "ne", "lt", "gt",
            "sub", "add", "mul", "div", "reciprocal", "unbind", "t"):
    if hasattr(Tensor, _op):
        globals()[_op] = _elementwise(_op)
del _op


def is_tensor(x) -> "bool":
    return isinstance(x, Tensor)


def numel(x) -> "int":
    return x.numel()


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(f"module 'tracegrad' has no attribute {name!r}")
    raise _missing("tracegrad", name, [n for n in globals() if not n.startswith("_")])


from . import nn, optim, utils  # noqa: E402  (subpackages, as torch.nn / torch.optim)
