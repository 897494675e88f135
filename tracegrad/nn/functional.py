"""`tracegrad.nn.functional`: PyTorch's functional API over the IR's composite ops.

    import tracegrad.nn.functional as F
    y = F.gelu(F.linear(x, w, b), approximate="tanh")
    loss = F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-1)

Each function checks and reshapes its arguments the way PyTorch does, then calls one composite
op (`linear`, `layer_norm`, `scaled_dot_product_attention`, `cross_entropy`, `conv2d`, ...), so
eager runs and compiled steps see the same op, and a backend with a kernel template for it
uses it.
"""
from __future__ import annotations

import math

import numpy as np

from ..autograd import no_grad
from ..creation import arange, ones, zeros
from ..dispatch import apply
from ..errors import ShapeError, UnsupportedError
from ..functions import where
from ..ir.types import bool_, int64, promote
from ..random import current_generator
from ..surface import missing as _missing
from ..tensor import Tensor
from .index_checks import check_class_target as _check_target, check_embedding_indices as _check_embedding
from .conv_functional import (_autocast, _pair, adaptive_avg_pool2d, avg_pool2d, conv2d,  # noqa: F401
                              max_pool2d, pad)
from ..provenance import where as _where


# -- linear, embedding ------------------------------------------------------------------------
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, with W [out, in]."""
    input, weight, bias = _autocast(input, weight, bias)
    return apply("linear", input, weight) if bias is None else apply("linear", input, weight, bias)


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None, max_norm=None, norm_type=2.0,
              scale_grad_by_freq=False, sparse=False) -> Tensor:
    """Rows of `weight` at the integer indices `input`; row `padding_idx` gets no gradient."""
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise UnsupportedError("embedding: max_norm, scale_grad_by_freq and sparse are not supported")
    _check_embedding(input, weight)
    if padding_idx is not None and weight.requires_grad:
        pad = padding_idx % weight.shape[0]
        rows = apply("iota", shape=(weight.shape[0], 1), axis=0, dtype=int64, device=weight._type.device)
        weight = where(rows == pad, weight.detach(), weight)
    return apply("embedding", weight, input)


# -- activations ------------------------------------------------------------------------------
def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return apply("gelu", input, approximate=approximate)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    return apply("silu", input)


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    return apply("relu", input)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    return where(input > 0, input, input * negative_slope)


def tanh(input: Tensor) -> Tensor:
    return input.tanh()


def sigmoid(input: Tensor) -> Tensor:
    return input.sigmoid()


def softmax(input: Tensor, dim: int, dtype=None) -> Tensor:
    return input.softmax(dim, dtype=dtype)


def log_softmax(input: Tensor, dim: int, dtype=None) -> Tensor:
    return input.log_softmax(dim, dtype=dtype)


# -- normalization ----------------------------------------------------------------------------
def _shape_arg(normalized_shape) -> tuple[int, ...]:
    return (int(normalized_shape),) if isinstance(normalized_shape, int) else tuple(normalized_shape)


def layer_norm(input: Tensor, normalized_shape, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    shape = _shape_arg(normalized_shape)
    if tuple(input.shape[input.ndim - len(shape):]) != shape:
        raise ShapeError(f"layer_norm: normalized_shape {list(shape)} does not match the trailing dimensions "
                         f"of the input of shape {list(input.shape)}\n  at {_where()}\n"
                         f"normalized_shape is the input's last dimension(s), e.g. ({input.shape[-1]},)")
    dev = input._type.device
    dt = weight.dtype if weight is not None else bias.dtype if bias is not None else input.dtype
    weight = weight if weight is not None else ones(*shape, dtype=dt, device=dev)
    bias = bias if bias is not None else zeros(*shape, dtype=weight.dtype, device=dev)
    return apply("layer_norm", input, weight, bias, eps=float(eps))


_EPS = {"float64": 2.220446049250313e-16, "float32": 1.1920928955078125e-07, "float16": 0.0009765625,
        "bfloat16": 0.0078125}   # torch.finfo(dtype).eps


def rms_norm(input: Tensor, normalized_shape, weight: Tensor | None = None, eps: float | None = None) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * w; eps=None means the dtype's machine epsilon, as in PyTorch."""
    shape = _shape_arg(normalized_shape)
    if eps is None:
        eps = _EPS.get(input.dtype.name, _EPS["float32"])
    weight = weight if weight is not None else ones(*shape, dtype=input.dtype, device=input._type.device)
    return apply("rms_norm", input, weight, eps=float(eps))


def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None, weight: Tensor | None = None,
               bias: Tensor | None = None, training: bool = False, momentum=0.1, eps: float = 1e-5) -> Tensor:
    """Normalize over every axis but 1. In training mode, batch statistics are used and the running
    ones updated in place (`r <- (1 - momentum) r + momentum stat`, unbiased variance), which inside a
    compiled step becomes a write-back of the buffers."""
    c = input.shape[1]
    axes = (0,) + tuple(range(2, input.ndim))
    bshape = (1, c) + (1,) * (input.ndim - 2)
    if training:
        n = input.numel() // c
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {list(input.shape)}")
        mean = input.mean(axes, keepdim=True)
        xc = input - mean
        var = (xc * xc).mean(axes, keepdim=True)
        if running_mean is not None and running_var is not None:
            with no_grad():
                running_mean.mul_(1 - momentum).add_(mean.detach().reshape(c) * momentum)
                running_var.mul_(1 - momentum).add_(var.detach().reshape(c) * (n / (n - 1)) * momentum)
        y = xc * (var + eps).rsqrt()
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm in eval mode needs running_mean and running_var")
        y = (input - running_mean.reshape(bshape)) * (running_var.reshape(bshape) + eps).rsqrt()
    if weight is not None:
        y = y * weight.reshape(bshape)
    if bias is not None:
        y = y + bias.reshape(bshape)
    return y


# -- dropout ----------------------------------------------------------------------------------
def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p), drawing from tg's RNG
    (its state advances as a write-back, so compiled and eager runs draw the same masks)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    state = current_generator().state_for(input._type.device)
    y, nxt = apply("dropout", input, state, p=float(p))
    state._assign(nxt)
    return y


# -- losses -----------------------------------------------------------------------------------
def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def cross_entropy(input: Tensor, target: Tensor, weight=None, size_average=None, ignore_index: int = -100,
                  reduce=None, reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """PyTorch's cross_entropy: input [N, C] (or [N, C, d1, ...], or [C]); target class indices
    [N] ([N, d1, ...]) or class probabilities shaped like input."""
    if weight is not None:
        raise UnsupportedError("cross_entropy(weight=...) is not supported; use reduction='none' and weight the rows")
    if size_average is not None or reduce is not None:
        raise UnsupportedError("cross_entropy: size_average/reduce are deprecated; use reduction=")
    _check_target("cross_entropy", input, target, ignore_index)
    if input.ndim == 1:
        out = cross_entropy(input.unsqueeze(0), target.unsqueeze(0), ignore_index=ignore_index,
                            reduction=reduction, label_smoothing=label_smoothing)
        return out.squeeze(0) if reduction == "none" else out
    c = input.shape[1]
    if target.dtype.is_floating:     # class probabilities
        if label_smoothing:
            target = target * (1.0 - label_smoothing) + label_smoothing / c
        loss = -(target * input.log_softmax(1)).sum(1)
        return loss.sum() / (input.numel() // c) if reduction == "mean" else _reduce(loss, reduction)
    x = input if input.ndim == 2 else input.permute(0, *range(2, input.ndim), 1).reshape(-1, c)
    t = target.reshape(-1)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    loss, _ = apply("cross_entropy", x, t, ignore_index=int(ignore_index), label_smoothing=float(label_smoothing),
                    reduction=reduction)
    return loss.reshape(target.shape) if reduction == "none" else loss


def nll_loss(input: Tensor, target: Tensor, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
             reduction: str = "mean") -> Tensor:
    """-input[n, target[n]] (input holds log-probabilities [N, C])."""
    if weight is not None or input.ndim != 2:
        raise UnsupportedError("nll_loss supports [N, C] input without class weights")
    _check_target("nll_loss", input, target, ignore_index)
    ok = target != ignore_index
    safe = where(ok, target, 0).to(int64)
    picked = -input.gather(1, safe.unsqueeze(1)).squeeze(1)
    loss = where(ok, picked, 0.0)
    if reduction == "mean":
        return loss.sum() / ok.to(input.dtype).sum()
    return _reduce(loss, reduction)


def mse_loss(input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    if tuple(input.shape) != tuple(target.shape):
        shape = np.broadcast_shapes(tuple(input.shape), tuple(target.shape))
        input, target = input.expand(*shape), target.expand(*shape)
    if target.dtype != input.dtype:     # promote, as PyTorch does (f32 with f64 gives f64)
        d = promote(input.dtype, target.dtype)
        input, target = input.to(d), target.to(d)
    return apply("mse_loss", input, target, reduction=reduction)


def l1_loss(input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    return _reduce((input - target).abs(), reduction)


# -- attention --------------------------------------------------------------------------------
def _repeat_heads(x: Tensor, n: int) -> Tensor:
    """[..., H, S, D] -> [..., H*n, S, D], each head repeated n times in a row (repeat_interleave)."""
    *lead, h, s, d = x.shape
    return x.unsqueeze(-3).expand(*lead, h, n, s, d).reshape(*lead, h * n, s, d)


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
                                 dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> Tensor:
    """softmax(q k^T * scale + mask) v over [..., H, T, D] tensors. attn_mask is a bool keep-mask or an
    additive float mask; with enable_gqa, k/v may have fewer heads than q (a divisor of them)."""
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: pass either attn_mask or is_causal=True, not both")
    if key.ndim >= 3 and key.shape[-3] != query.shape[-3]:
        hq, hk = query.shape[-3], key.shape[-3]
        if not enable_gqa or hq % hk:
            raise ValueError(f"scaled_dot_product_attention: query has {hq} heads and key {hk}; "
                             "pass enable_gqa=True (with query heads a multiple of key heads)")
        key, value = _repeat_heads(key, hq // hk), _repeat_heads(value, hq // hk)
    query, key, value = _autocast(query, key, value)
    if dropout_p > 0.0:
        return _attention_with_dropout(query, key, value, attn_mask, dropout_p, is_causal, scale)
    masks = () if attn_mask is None else (attn_mask,)
    out, _ = apply("scaled_dot_product_attention", query, key, value, *masks, is_causal=bool(is_causal),
                   scale=None if scale is None else float(scale))
    return out


def _attention_with_dropout(q, k, v, mask, p, is_causal, scale):
    """The explicit form (the fused op has no dropout): scores, mask, softmax, dropout, @ v."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ k.transpose(-2, -1)).float() * scale
    t, n = s.shape[-2:]
    if is_causal:
        s = s.masked_fill(ones(t, n, dtype=bool_, device=q._type.device).tril().logical_not(), float("-inf"))
    if mask is not None:
        s = s.masked_fill(mask.logical_not(), float("-inf")) if mask.dtype == bool_ else s + mask.float()
    w = dropout(s.softmax(-1), p, training=True).to(v.dtype)
    return w @ v


# -- odds and ends ----------------------------------------------------------------------------
def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot encoding along a new last axis (num_classes=-1 reads max+1, eagerly)."""
    if tensor.dtype.is_floating:
        raise TypeError("one_hot is only applicable to index tensor")
    if num_classes < 0:
        num_classes = int(tensor.max().item()) + 1
    classes = arange(num_classes, device=tensor._type.device)
    return (tensor.to(int64).unsqueeze(-1) == classes).to(int64)


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor:
    return input / input.norm(p, dim, keepdim=True).clamp(min=eps)


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    return input.flatten(start_dim, end_dim)


__all__ = ["linear", "embedding", "gelu", "silu", "relu", "leaky_relu", "tanh", "sigmoid", "softmax", "log_softmax",
           "layer_norm", "rms_norm", "batch_norm", "dropout", "cross_entropy", "nll_loss", "mse_loss", "l1_loss",
           "scaled_dot_product_attention", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "one_hot",
           "pad", "normalize", "flatten"]


# the losses and activations of losses.py and activations.py, under F as in PyTorch
from .activations import (elu, glu, hardsigmoid, hardswish, hardtanh, logsigmoid, mish, relu6,  # noqa: E402,F401
                          softplus, softsign)
from .losses import (binary_cross_entropy, binary_cross_entropy_with_logits, huber_loss, kl_div,  # noqa: E402,F401
                     smooth_l1_loss)


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    raise _missing("tracegrad.nn.functional", name, [n for n in globals() if not n.startswith("_")])
