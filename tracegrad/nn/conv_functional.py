"""Convolution, pooling and padding for `tracegrad.nn.functional` (NCHW): conv2d, max/avg/adaptive
pooling, pad.

Each checks PyTorch's arguments (ints or pairs, 'same'/'valid' padding, groups) and calls one
composite op of the IR (`conv2d`, `max_pool2d`, `avg_pool2d`).
"""
from __future__ import annotations

from .. import amp
from ..creation import ones
from ..dispatch import apply
from ..errors import UnsupportedError
from ..functions import cat
from ..ir.types import bool_
from ..tensor import Tensor


def _pair(v, name: str = "argument") -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(a) for a in v)
    if len(v) == 1:
        return (v[0], v[0])
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v}")
    return v


def _autocast(*ts):
    d = amp.autocast_dtype()
    if d is None:
        return ts
    return tuple(t.to(d) if t is not None and t.dtype.is_floating else t for t in ts)


def pad(input: Tensor, pad, mode: str = "constant", value: float | None = None) -> Tensor:
    """Pad (or, with negative sizes, crop) the last len(pad)//2 axes: pad = (left, right, top, bottom, ...)."""
    if mode != "constant":
        raise UnsupportedError(f"pad: mode={mode!r} is not supported (only 'constant')")
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(f"pad: padding length must be even and at most 2*ndim, got {len(pad)}")
    pairs = [(0, 0)] * input.ndim
    for i in range(len(pad) // 2):
        pairs[input.ndim - 1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]))
    if any(lo < 0 or hi < 0 for lo, hi in pairs):   # crop first
        input = input[tuple(slice(-lo if lo < 0 else 0, s + hi if hi < 0 else s) for (lo, hi), s in zip(pairs, input.shape))]
        pairs = [(max(lo, 0), max(hi, 0)) for lo, hi in pairs]
    if not any(lo or hi for lo, hi in pairs):
        return input
    fill = 0.0 if value is None else value
    if not input.dtype.is_floating:
        fill = int(fill) if input.dtype != bool_ else bool(fill)
    return apply("pad", input, pads=tuple(pairs), value=fill)


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1,
           groups: int = 1) -> Tensor:
    """NCHW convolution; weight [O, C/groups, kh, kw]; padding an int, a pair, 'valid' or 'same'."""
    if input.ndim == 3:
        return conv2d(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups).squeeze(0)
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    kh, kw = weight.shape[2:]
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
            total = (dilation[0] * (kh - 1), dilation[1] * (kw - 1))
            lo = (total[0] // 2, total[1] // 2)
            if total[0] % 2 or total[1] % 2:   # uneven: pad the extra row/column at the end, as PyTorch
                input = pad(input, (lo[1], total[1] - lo[1], lo[0], total[0] - lo[0]))
                lo = (0, 0)
            padding = lo
        else:
            raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    padding = _pair(padding, "padding")
    input, weight, bias = _autocast(input, weight, bias)
    if groups != 1:
        c, o = input.shape[1], weight.shape[0]
        if c % groups or o % groups:
            raise ValueError(f"conv2d: in_channels {c} and out_channels {o} must be divisible by groups={groups}")
        xs, ws = input.chunk(groups, 1), weight.chunk(groups, 0)
        bs = bias.chunk(groups, 0) if bias is not None else [None] * groups
        return cat([conv2d(x, w, b, stride, padding, dilation) for x, w, b in zip(xs, ws, bs)], 1)
    args = (input, weight) if bias is None else (input, weight, bias)
    return apply("conv2d", *args, stride=stride, padding=padding, dilation=dilation)


def _pool_args(kernel_size, stride, padding):
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None or stride == [] else _pair(stride, "stride")
    return kernel, stride, _pair(padding, "padding")


def max_pool2d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False) -> Tensor:
    if _pair(dilation) != (1, 1) or ceil_mode or return_indices:
        raise UnsupportedError("max_pool2d: dilation, ceil_mode and return_indices are not supported")
    if input.ndim == 3:
        return max_pool2d(input.unsqueeze(0), kernel_size, stride, padding).squeeze(0)
    kernel, stride, padding = _pool_args(kernel_size, stride, padding)
    return apply("max_pool2d", input, kernel=kernel, stride=stride, padding=padding)


def avg_pool2d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    if ceil_mode:
        raise UnsupportedError("avg_pool2d: ceil_mode is not supported")
    if input.ndim == 3:
        return avg_pool2d(input.unsqueeze(0), kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override).squeeze(0)
    kernel, stride, padding = _pool_args(kernel_size, stride, padding)
    y = apply("avg_pool2d", input, kernel=kernel, stride=stride, padding=padding)
    if divisor_override:
        return y * (kernel[0] * kernel[1] / divisor_override)
    if not count_include_pad and any(padding):   # divide by the number of real (unpadded) cells
        frac = apply("avg_pool2d", ones(1, 1, *input.shape[2:], dtype=input.dtype, device=input._type.device),
                     kernel=kernel, stride=stride, padding=padding)
        return y / frac
    return y


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    """Average over PyTorch's adaptive windows: rows floor(i H/oh) .. ceil((i+1) H/oh)."""
    if input.ndim == 3:
        return adaptive_avg_pool2d(input.unsqueeze(0), output_size).squeeze(0)
    h, w = input.shape[-2:]
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    oh, ow = oh or h, ow or w
    if (oh, ow) == (1, 1):
        return input.mean((-2, -1), keepdim=True)
    if h % oh == 0 and w % ow == 0:
        k = (h // oh, w // ow)
        return apply("avg_pool2d", input, kernel=k, stride=k, padding=(0, 0))
    y = _adaptive_axis(input, -2, oh)
    return _adaptive_axis(y, -1, ow)


def _adaptive_axis(x: Tensor, axis: int, out: int) -> Tensor:
    n = x.shape[axis]
    if n == out:
        return x
    parts = []
    for i in range(out):
        lo, hi = (i * n) // out, -(-((i + 1) * n) // out)
        idx = [slice(None)] * x.ndim
        idx[axis] = slice(lo, hi)
        parts.append(x[tuple(idx)].mean(axis, keepdim=True))
    return cat(parts, axis % x.ndim)
