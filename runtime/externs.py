"""The library a generated Triton host function calls (`rt.matmul(...)`, `rt.empty(...)`, ...):
buffers and views, the ops outside the generated kernels (matmul: numpy, or on CUDA cuBLAS
through CuPy or the Triton template, whichever measured faster for the shape), the attention
and cross-entropy templates, scatters, collectives. One `Externs` serves one program.

Ops without a kernel of their own run through `run_op(device, op, arrays, attrs, dry=False)`, the
eager one-op path, which the code generator hands in (runtime knows no graph and no lowering).
"""
from __future__ import annotations

import math

import numpy as np

from ..ir.types import DTYPES
from . import devices, measured, numpy_kernels
from .comm import SingleProcess
from .devices import TypedArray, map_array as _map
from .triton_host import launch


class DryRunEnds(Exception):
    """A dry run reached what it cannot pass without running (a message from another rank)."""


class Externs:
    """The names a generated host function calls, for one target."""

    def __init__(self, target: str, run_op, comm=None):
        self.cuda = target == "cuda"
        self.run_op = run_op
        self.comm = comm or SingleProcess()
        self.matmul_choice: dict = {}
        self.marks: list = []       # (launch number, event or host time), from a profiled call
        self.flags = None           # the program's IndexFlags (index_flags.py), set by the program
        # NOTE: a dry run (compile_ahead.py) launches nothing, and nothing here may read a buffer's
        # values then: they are garbage, and an index read from one could fault the device
        self.dry = False

    def mark(self, k: int) -> None:
        """Where launch k begins (k = -1: the end) in a profiled call: a CUDA event on the current
        stream, a host clock on the CPU."""
        if self.cuda:
            import cupy
            ev = cupy.cuda.Event()
            ev.record()
            self.marks.append((k, ev))
        else:
            import time
            self.marks.append((k, time.perf_counter()))

    def launch_times(self) -> dict[int, float]:
        """Milliseconds from each mark to the next (the launch's device time, and any idle gap before
        the next launch), summed per launch number; the marks are cleared."""
        out: dict[int, float] = {}
        if self.cuda and self.marks:
            import cupy
            self.marks[-1][1].synchronize()
            gap = lambda a, b: cupy.cuda.get_elapsed_time(a, b)   # noqa: E731
        else:
            gap = lambda a, b: 1e3 * (b - a)                       # noqa: E731
        for (k, a), (_, b) in zip(self.marks, self.marks[1:]):
            if k >= 0:
                out[k] = out.get(k, 0.0) + gap(a, b)
        self.marks = []
        return out

    def namespace(self) -> dict:
        """`rt` (this object) and the names literals in the host code need."""
        return {"rt": self, "inf": math.inf, "nan": math.nan}

    launch = staticmethod(launch)

    def __getattr__(self, name):    # dtypes by their short names: rt.f32, rt.bf16
        d = _SHORT.get(name)
        if d is None:
            raise AttributeError(name)
        return d

    # -- buffers and views ----------------------------------------------------------------------
    def empty(self, shape, dt, device):
        return devices.empty(shape, dt.np, device if self.cuda else "cpu")

    def contiguous(self, x):
        if type(x) is TypedArray:
            return x if x.array.flags.c_contiguous else TypedArray(x.array.copy(), x.dtype)
        if isinstance(x, np.ndarray):
            return x if x.flags.c_contiguous and x.flags.aligned else np.ascontiguousarray(x)
        return x if x.flags.c_contiguous else x.copy()

    def writable(self, x):
        """x contiguous, and writable where the step updates it in place (a numpy buffer may be a
        read-only view; CuPy's never are)."""
        x = self.contiguous(x)
        a = x.array if type(x) is TypedArray else x
        if isinstance(a, np.ndarray) and not a.flags.writeable:
            return TypedArray(a.copy(), x.dtype) if type(x) is TypedArray else a.copy()
        return x

    def reshape(self, x, shape):
        return _map(lambda a: a.reshape(shape), x)

    def permute(self, x, dims):
        return _map(lambda a: a.transpose(dims), x)

    def expand(self, x, shape):
        xp = self._xp(x)
        return _map(lambda a: xp.broadcast_to(a, shape), x)

    def slice_(self, x, starts, stops, steps):
        return _map(lambda a: a[tuple(slice(lo, hi, st) for lo, hi, st in zip(starts, stops, steps))], x)

    def full(self, shape, value, dt, device):
        if not self.cuda:
            return np.full(shape, value, dtype=dt.np)
        return self.run_op(device, "full", [], dict(shape=shape, value=value, dtype=dt, device=device))[0]

    def iota(self, shape, axis, dt, device):
        if not self.cuda:
            return numpy_kernels.iota(shape, axis, dt.np)
        return self.run_op(device, "iota", [], dict(shape=shape, axis=axis, dtype=dt, device=device))[0]

    def _xp(self, x):
        if devices.is_cuda(x):
            import cupy
            return cupy
        return np

    # -- extern ops -----------------------------------------------------------------------------
    def run(self, op, arrays, /, **attrs):
        """One op outside the generated kernels: numpy on the CPU, CuPy on CUDA. Its results are
        made C-contiguous: numpy keeps a transposed operand's layout (`a.T + b.T` is Fortran-
        ordered), and the kernels index row-major."""
        dev = "cpu" if not self.cuda else next(
            (f"cuda:{a.device.id}" for a in arrays if devices.is_cuda(a)), "cuda:0")
        outs = self.run_op(dev, op, list(arrays), attrs, dry=self.dry)
        return [self.contiguous(o) for o in outs]

    def matmul(self, a, b):
        if not self.cuda:
            return self.run("matmul", [a, b])[0]
        return self._cuda_matmul(a, b)

    def matmul_epilogue(self, a, b, bias, activation, residual, out_shape):
        """act(a @ b + bias) + residual through the matmul template (interpreted on the CPU)."""
        from .templates import matmul as mm
        n = b.shape[-1]
        if bias is not None:
            bias = self.contiguous(self.reshape(bias, (n,)))
        if residual is not None:
            m_shape = tuple(max(a.shape[0] if a.ndim == 3 else 1, b.shape[0] if b.ndim == 3 else 1)
                            for _ in range(int(a.ndim == 3 or b.ndim == 3))) + (a.shape[-2], n)
            residual = self.reshape(residual, m_shape)
        return self.reshape(mm.matmul(a, b, bias=bias, activation=activation, residual=residual), out_shape)

    def index_add(self, x, idx, src, axis, chk=None):
        idx = self._checked(idx, x.shape[axis], chk)
        return self.run("index_add", [x, idx, src], axis=axis)[0]

    def scatter_add(self, x, idx, src, axis, chk=None):
        idx = self._checked(idx, x.shape[axis], chk)
        return self.run("scatter_add", [x, idx, src], axis=axis)[0]

    def _checked(self, idx, size, chk):
        """The index with each bad entry flagged into row `chk` of the program's flags (index_flags.py)
        and replaced by 0, so nothing is written out of bounds while the flag waits to be read.
        NOTE: on the CPU the flags are read at once (free there), as after the program's call."""
        if chk is None:
            return idx
        from .templates.checks import flag_range
        safe = flag_range(self.contiguous(idx), chk, 0, size)
        if not self.cuda and self.flags is not None:
            self.flags.check()
        return safe

    def extern(self, op, arrays, /, **attrs):
        """An op the kernels do not cover (results C-contiguous, as `run`'s)."""
        attrs = {k: (DTYPES[v.name] if hasattr(v, "short") else v) for k, v in attrs.items()}
        if self.dry and op in ("send", "recv"):
            raise DryRunEnds(f"{op} waits for another rank")
        if self.dry:
            outs = self.run(op, arrays, **attrs)
            return outs[0] if len(outs) == 1 else outs
        if op in ("all_reduce", "all_gather", "reduce_scatter", "broadcast"):
            return self.contiguous(getattr(self.comm, op)(arrays[0], *attrs.values()))
        if op == "send":
            return self.comm.send(arrays[0], attrs["peer"], attrs["group"])
        if op == "recv":
            return self.contiguous(self.comm.recv(attrs["shape"], attrs["dtype"].np, attrs["device"], attrs["peer"],
                                                  attrs["group"]))
        outs = self.run(op, arrays, **attrs)
        return outs[0] if len(outs) == 1 else outs

    # -- templates: the host code calls these by the op's name where `template_applies` -----------
    def cross_entropy(self, x, t, ignore_index, label_smoothing, reduction, chk=None):
        from .templates import cross_entropy as ce
        # NOTE: logits of [1, C, d] reach here as a transposed view; the template reads whole rows
        rows, lse = ce.cross_entropy_forward(self.contiguous(x), t, ignore_index, label_smoothing, chk=chk)
        if reduction == "none":
            return rows, lse
        xp = self._xp(rows)
        total = rows.sum()
        if reduction == "mean":
            total = total / (t != ignore_index).sum()
        return xp.asarray(total, dtype=np.float32), lse

    def cross_entropy_bwd(self, x, t, lse, gy, ignore_index, label_smoothing, reduction, inplace=False):
        """inplace=True (the codegen's choice when the logits die here) writes dlogits over x."""
        from .templates import cross_entropy as ce
        return ce.cross_entropy_backward(self.contiguous(x), t, lse, gy, ignore_index, label_smoothing, reduction,
                                         inplace=inplace)

    def scaled_dot_product_attention(self, q, k, v, is_causal, scale):
        from .templates import attention
        if q.ndim == 4:
            return attention.attention_forward(_head_dim_contiguous(q), _head_dim_contiguous(k),
                                               _head_dim_contiguous(v), is_causal, scale)
        o, lse = attention.attention_forward(_as4d(q), _as4d(k), _as4d(v), is_causal, scale)
        return self.reshape(o, q.shape[:-1] + (v.shape[-1],)), self.reshape(lse, q.shape[:-1])

    def scaled_dot_product_attention_bwd(self, q, k, v, o, lse, do, is_causal, scale):
        from .templates import attention
        if q.ndim == 4:
            args = [_head_dim_contiguous(a) for a in (q, k, v, o)] + [lse, _head_dim_contiguous(do)]
            return attention.attention_backward(*args, is_causal, scale)
        args = [_as4d(a) for a in (q, k, v, o)] + [_as4d(lse, 3), _as4d(do)]
        dq, dk, dv = attention.attention_backward(*args, is_causal, scale)
        return self.reshape(dq, q.shape), self.reshape(dk, k.shape), self.reshape(dv, v.shape)

    def paged_attention(self, q, k, v, k_cache, v_cache, block_tables, context_lens, block_size, scale):
        from .templates import paged_attention as pa
        q, k, v = (_head_dim_contiguous(a) for a in (q, k, v))
        return pa.paged_attention(q, k, v, k_cache, v_cache, self.contiguous(block_tables), context_lens,
                                  block_size, scale)

    # -- matmul on CUDA: cuBLAS or the Triton template, by measuring -------------------------------
    def _cuda_matmul(self, a, b):
        """cuBLAS (gemmEx: bf16 too) or the Triton template, whichever measured faster for the shape
        and layout (each choice timed once per GPU, on the step's own operands, and kept on disk:
        `measured`)."""
        from . import cublas
        from .templates import matmul as mm
        if a.ndim > 3 and a.shape[:-2] == b.shape[:-2]:
            # NOTE: [..., M, K] @ [..., K, N] as one batch of 3-D products: cuBLAS takes one batch
            # axis, and CuPy's matmul (its fallback) cannot be captured into a CUDA graph
            flat = lambda x: _map(lambda r: r.reshape((-1,) + r.shape[-2:]), x)
            c = self._cuda_matmul(flat(a), flat(b))
            return _map(lambda r: r.reshape(a.shape[:-2] + r.shape[-2:]), c)
        key = (tuple(a.shape), tuple(b.shape), tuple(a.strides), tuple(b.strides), str(a.dtype))
        choice = self.matmul_choice.get(key) or MATMUL_CHOICE.get(key)
        if self.dry and choice is None and cublas.supports(a, b) and FORCE_MATMUL != "cublas":
            # NOTE: the template is compiled now to be measured against cuBLAS at the first call
            choice = measured.recall("matmul", key, a.device.id) or "template"
        if choice is None:
            if not cublas.supports(a, b):
                choice = "cupy"
            elif FORCE_MATMUL:
                choice = FORCE_MATMUL
            else:
                dev = a.device.id
                choice = measured.recall("matmul", key, dev)
                if choice not in ("cublas", "template"):
                    choice = _measure(lambda: cublas.gemm(a, b), lambda: mm.matmul(a, b))
                    measured.remember("matmul", key, dev, choice)
            MATMUL_CHOICE[key] = self.matmul_choice[key] = choice
        if choice == "template":
            return mm.matmul(a, b)
        if choice == "cublas":
            return cublas.gemm(a, b)
        import cupy
        if type(a) is TypedArray:   # CuPy has no bf16: widen, multiply, round (shapes cuBLAS is not given)
            return devices.round_bf16(cupy.matmul(devices.widen(a), devices.widen(b)))
        return cupy.matmul(a, b)


_SHORT = {d.short: d for d in DTYPES.values()}
MATMUL_CHOICE: dict = {}     # (shapes, strides, dtype) -> "cublas" | "template", measured once per process
FORCE_MATMUL = None          # "cublas" | "template": skip the measurement (benchmarks compare the two)


def _measure(*fns) -> str:
    from .triton_host import cupy_do_bench
    times = [cupy_do_bench(f, warmup=5, rep=20) for f in fns]
    return ("cublas", "template")[int(np.argmin(times))]


def _head_dim_contiguous(x):
    """The attention template wants the last axis contiguous."""
    return x if x.strides[-1] == x.dtype.itemsize else _map(lambda a: a.copy(), x)


def _as4d(x, nd=4):
    """[B, T, D] -> [B, 1, T, D] (lse: [B, T] -> [B, 1, T]), the last axis contiguous."""
    x = _head_dim_contiguous(x)
    return x if x.ndim == nd else _map(lambda a: a.reshape(a.shape[:1] + (1,) + a.shape[1:]), x)
