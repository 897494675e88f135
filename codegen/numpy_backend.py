"""The numpy backend: the reference semantics of every primitive, as one table of lowerings.

Each lowering turns argument names into one numpy expression (`np.add(t1, t2)`). The same table
serves both uses: `numpy_program` writes a straight-line Python function for a whole graph (the
kernel body the CPU runs), and `eager` evaluates one op at a time through a small cached lambda.
Half-precision math runs in fp32 and rounds once per op, as the GPU kernels do.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..ir.ops import OPS, get
from ..ir.types import DType, TensorType, bfloat16, float16
from ..runtime import numpy_kernels
from ..runtime.comm import SingleProcess

HALF = (float16, bfloat16)


def np_dtype(d: DType) -> str:
    return "bfloat16" if d == bfloat16 else f"np.{d.name}"


def lit(v) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return "np.nan" if math.isnan(v) else ("np.inf" if v > 0 else "-np.inf")
    return repr(v)


def _f32(a: str, t: TensorType) -> str:
    return f"{a}.astype(np.float32)" if t.dtype in HALF else a


def _round(expr: str, t: TensorType) -> str:
    return f"({expr}).astype({np_dtype(t.dtype)})" if t.dtype in HALF else expr


def _math(fn: str) -> Callable:
    """A numpy function applied to fp32 copies of half inputs, rounded back once."""
    def lower(a, ins, outs, **_):
        args = ", ".join(_f32(x, t) for x, t in zip(a, ins))
        return _round(f"{fn}({args})", outs[0])
    return lower


def _div(a, ins, outs):
    fn = "np.floor_divide" if ins[0].dtype.is_integer else "np.divide"
    return _math(fn)(a, ins, outs)


# NOTE: numpy reduces a short innermost axis with a tiny loop per output element: a 2x2 max-pool's
# max over its window axes took 8.6 ms where the four strided views' elementwise maxima took 0.27
FOLD_MAX_TAPS, FOLD_MIN_OUT = 8, 1024


def _reduce(fn):
    ufunc = {"np.sum": "np.add", "np.max": "np.maximum"}[fn]

    def lower(a, ins, outs, axes, keepdim):
        x = ins[0]
        taps = math.prod(x.shape[i] for i in axes)
        if (x.ndim - 1 in axes and 1 < taps <= FOLD_MAX_TAPS and x.dtype not in HALF
                and x.numel // taps >= FOLD_MIN_OUT):
            return f"fold_axes({ufunc}, {a[0]}, {axes!r}, {keepdim})"
        acc = ", dtype=np.float32" if x.dtype in HALF and fn == "np.sum" else ""
        return _round(f"{fn}({a[0]}, axis={axes!r}{acc}, keepdims={keepdim})", outs[0])
    return lower


def _slice(a, ins, outs, starts, stops, steps):
    parts = []
    for lo, hi, st, n in zip(starts, stops, steps, ins[0].shape):
        if (lo, hi, st) == (0, n, 1):
            parts.append(":")
        else:
            parts.append(f"{lo}:{hi}" + (f":{st}" if st != 1 else ""))
    return f"{a[0]}[{', '.join(parts)}{',' if len(parts) == 1 else ''}]" if parts else a[0]


def _full(a, ins, outs, shape, value, dtype, device):
    if shape == ():     # NOTE: a 0-d constant per Python number in eager code; np.array is 5x faster than np.full
        return f"np.array({lit(value)}, dtype={np_dtype(dtype)})"
    return f"np.full({shape!r}, {lit(value)}, dtype={np_dtype(dtype)})"


def _matmul(a, ins, outs):
    return _round(f"np.matmul({_f32(a[0], ins[0])}, {_f32(a[1], ins[1])})", outs[0])


LOWER: dict[str, Callable[..., str]] = {
    **{op: _math(f"np.{op}") for op in ("exp", "log", "sqrt", "tanh", "sin", "cos", "abs", "sign", "floor",
                                         "add", "maximum", "minimum", "mod")},
    "sub": _math("np.subtract"), "mul": _math("np.multiply"), "pow": _math("np.power"), "div": _div,
    "neg": _math("np.negative"), "rsqrt": _math("1.0 / np.sqrt"), "reciprocal": _math("np.reciprocal"),
    "erf": _math("erf"), "sigmoid": _math("sigmoid"),
    "logical_not": lambda a, i, o: f"np.logical_not({a[0]})", "isnan": lambda a, i, o: f"np.isnan({a[0]})",
    **{op: (lambda fn: lambda a, i, o: f"{fn}({a[0]}, {a[1]})")(fn) for op, fn in
       dict(eq="np.equal", ne="np.not_equal", lt="np.less", le="np.less_equal", gt="np.greater",
            ge="np.greater_equal", logical_and="np.logical_and", logical_or="np.logical_or").items()},
    "where": lambda a, i, o: f"select({a[0]}, {a[1]}, {a[2]})",
    "cast": lambda a, i, o, dtype: f"{a[0]}.astype({np_dtype(dtype)})",
    "sum": _reduce("np.sum"), "max": _reduce("np.max"),
    "argmax": lambda a, i, o, axis, keepdim: f"np.argmax({a[0]}, axis={axis}, keepdims={keepdim})",
    "reshape": lambda a, i, o, shape: f"{a[0]}.reshape({shape!r})",
    "permute": lambda a, i, o, dims: f"{a[0]}.transpose({dims!r})",
    "expand": lambda a, i, o, shape: f"np.broadcast_to({a[0]}, {shape!r})",
    "slice": _slice,
    "pad": lambda a, i, o, pads, value: f"pad({a[0]}, {pads!r}, {lit(value)})",
    "concat": lambda a, i, o, axis: f"np.concatenate(({', '.join(a)},), axis={axis})",
    "take": lambda a, i, o, axis: f"np.take({a[0]}, {a[1]}, axis={axis})",
    "gather": lambda a, i, o, axis: f"np.take_along_axis({a[0]}, {a[1]}, axis={axis})",
    "index_add": lambda a, i, o, axis: f"index_add({a[0]}, {a[1]}, {a[2]}, {axis})",
    "scatter_add": lambda a, i, o, axis: f"scatter_add({a[0]}, {a[1]}, {a[2]}, {axis})",
    "matmul": _matmul,
    "full": _full,
    "iota": lambda a, i, o, shape, axis, dtype, device: f"iota({shape!r}, {axis}, {np_dtype(dtype)})",
    "rand_uniform": lambda a, i, o, shape, dtype: f"rand_uniform({a[0]}, {shape!r}, {np_dtype(dtype)})",
    "rand_normal": lambda a, i, o, shape, dtype: f"rand_normal({a[0]}, {shape!r}, {np_dtype(dtype)})",
    "stop_gradient": lambda a, i, o: a[0],
    "all_reduce": lambda a, i, o, op, group: f"comm.all_reduce({a[0]}, {op!r}, {group!r})",
    "all_gather": lambda a, i, o, axis, group: f"comm.all_gather({a[0]}, {axis}, {group!r})",
    "reduce_scatter": lambda a, i, o, axis, group: f"comm.reduce_scatter({a[0]}, {axis}, {group!r})",
    "broadcast": lambda a, i, o, root, group: f"comm.broadcast({a[0]}, {root}, {group!r})",
    "send": lambda a, i, o, peer, group: f"comm.send({a[0]}, {peer}, {group!r})",
    "recv": lambda a, i, o, shape, dtype, device, peer, group:
        f"comm.recv({shape!r}, {np_dtype(dtype)}, {device!r}, {peer}, {group!r})",
}

# ops whose lowering is a plain ufunc call that may write into a dying input (`out=`)
UFUNCS = {"add": "np.add", "sub": "np.subtract", "mul": "np.multiply", "div": "np.divide", "neg": "np.negative",
          "exp": "np.exp", "log": "np.log", "sqrt": "np.sqrt", "tanh": "np.tanh", "maximum": "np.maximum",
          "minimum": "np.minimum", "abs": "np.abs", "sin": "np.sin", "cos": "np.cos"}


def namespace(comm=None) -> dict:
    import ml_dtypes
    ns = {name: getattr(numpy_kernels, name) for name in
          ("erf", "sigmoid", "index_add", "scatter_add", "iota", "rand_uniform", "rand_normal",
           "select", "pad", "fold_axes")}
    ns.update(np=np, bfloat16=ml_dtypes.bfloat16, comm=comm or SingleProcess())
    return ns


def lower(op: str, args: list[str], ins: list[TensorType], outs: list[TensorType], attrs: dict) -> str:
    try:
        fn = LOWER[op]
    except KeyError:
        raise NotImplementedError(f"the numpy backend has no lowering for {op!r}"
                                  + (" (a composite: decompose it first)" if get(op).is_composite else "")) from None
    return fn(args, ins, outs, **attrs)


def missing_lowerings() -> list[str]:
    """Primitives without a numpy lowering (composites are covered by their decompositions)."""
    return [n for n, op in OPS.items() if not op.is_composite and n not in LOWER]
