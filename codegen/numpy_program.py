"""Whole-graph code generation for the CPU: a straight-line numpy function, one line per node,
with provenance comments, `del` where values die and `out=` where a dying buffer is reused.

    # tracegrad numpy | loss_fn#0 | 5 ops | peak 1.2 KiB of intermediates
    def loss_fn(x, w):
        # demo.py:7  return gelu(x @ w).sum()
        t0 = np.matmul(x, w)                       # f32[4, 16]
        ...
"""
from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..ir.graph import Graph, Node
from ..ir.ops import get
from ..ir.passes.memory import MemoryPlan, plan_memory
from ..runtime.nan_flags import NaNError, has_nan  # noqa: F401  (NaNError: re-exported)
from ..runtime.numpy_kernels import check_index
from .index_sites import index_op, site_where
from .numpy_backend import HALF, UFUNCS, lower, namespace

# ops whose integer index input (inputs[1]) is checked against the indexed axis before use
INDEXED = ("take", "gather", "index_add", "scatter_add")

# ops whose numpy result is always a fresh, writeable array
_OWNING_KINDS = ("unary", "binary", "ternary", "cast", "reduce", "matmul", "creation", "random", "index")


def owns(n: Node) -> bool:
    return get(n.op).kind in _OWNING_KINDS or n.op in ("pad", "concat")


def can_write_inplace(n: Node) -> bool:
    return n.op in UFUNCS and all(v.type.dtype not in HALF for v in n.inputs) and \
        all(v.type.dtype == n.outputs[0].type.dtype for v in n.inputs)


def _pad_adds(graph: Graph, plan: MemoryPlan) -> dict[int, int]:
    """{add: pad} for `y + pad(x)` where the add writes over y's dying buffer and the zero pad has
    no other reader: the program adds x into y's region instead of building the padded copy (a
    convolution's input gradient sums one such pad per kernel tap)."""
    prod = {o: i for i, n in enumerate(graph.nodes) for o in n.outputs}
    readers: dict = {}
    for n in graph.nodes:
        for v in n.inputs:
            readers[v] = readers.get(v, 0) + 1
    folds = {}
    for i, n in enumerate(graph.nodes):
        if n.op != "add" or i not in plan.reuse or n.inputs[0] is n.inputs[1]:
            continue
        v = n.inputs[1] if n.inputs[0] is plan.reuse[i] else n.inputs[0]
        p = prod.get(v)
        if (p is not None and graph.nodes[p].op == "pad" and graph.nodes[p].attrs["value"] == 0.0
                and readers[v] == 1 and v not in graph.outputs and v.type == n.out.type
                and graph.nodes[p].inputs[0].type.dtype == v.type.dtype):
            folds[i] = p
    return folds


def _moved_frees(graph: Graph, plan: MemoryPlan, folds: dict[int, int]) -> dict[int, list]:
    """The plan's `del`s with each folded pad's output gone (never made) and its input kept alive
    until the add that reads it."""
    frees = {i: list(vs) for i, vs in plan.frees.items()}
    for add, pad in folds.items():
        x, made = graph.nodes[pad].inputs[0], graph.nodes[pad].out
        moved = False
        for i, vs in frees.items():
            if made in vs:
                vs.remove(made)
            if x in vs and i < add:
                vs.remove(x)
                moved = True
        if moved:
            frees.setdefault(add, []).append(x)
    return frees


@dataclass
class NumpyProgram:
    source: str
    fn: Callable
    plan: MemoryPlan

    def __call__(self, *args):
        # inf and NaN are values here, as on a GPU (an fp16 step that overflows is skipped by its
        # GradScaler), not warnings; TRACEGRAD_CHECK_NANS=1 finds where a NaN came from
        with np.errstate(all="ignore"):
            outs = self.fn(*args)
        # numpy turns 0-d results into scalars; callers get arrays
        return tuple(o if isinstance(o, np.ndarray) else np.asarray(o) for o in outs)


# NOTE: eager mode asks once per op; os.environ.get encodes the key each time (~1 us), its own
# bytes-keyed dict (POSIX) does not
_ENV_BYTES = os.environ._data if os.name == "posix" and isinstance(getattr(os.environ, "_data", None), dict) else None


def check_nans_enabled() -> bool:
    if _ENV_BYTES is not None:
        return _ENV_BYTES.get(b"TRACEGRAD_CHECK_NANS", b"0") not in (b"", b"0")
    return os.environ.get("TRACEGRAD_CHECK_NANS", "0") not in ("", "0")


def check_nan(x, where: str) -> None:
    if has_nan(x):
        raise NaNError(f"first NaN produced by {where}")


def _kib(n: int) -> str:
    if n < 1 << 10:
        return f"{n} bytes"
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def keep_freed_memory() -> None:
    """Ask glibc to keep large freed blocks instead of unmapping them.

    NOTE: a step allocates and frees the same large temporaries every call; by default glibc hands
    each back to the OS and page-faults it in again next time (measured: 9.5 -> 5.5 ms on a small
    MLP-like program, about 30% of a CPU training step). TRACEGRAD_KEEP_MEMORY=0 opts out.
    """
    global _KEPT
    if _KEPT or os.environ.get("TRACEGRAD_KEEP_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return
    _KEPT = True
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)


_KEPT = False


def generate(graph: Graph, comm=None, check_nans: bool | None = None, kernels: dict | None = None) -> NumpyProgram:
    """The numpy program of `graph`; with `check_nans` (default: TRACEGRAD_CHECK_NANS=1) every float
    result is checked and the first NaN raises, naming its node and the user's line. `kernels` maps
    the names of the `kernel` nodes left in the graph to callables (compiled loops, `cpu_program`)."""
    kernels = kernels or {}
    if check_nans is None:
        check_nans = check_nans_enabled()
    keep_freed_memory()
    plan = plan_memory(graph, lambda n: n.op == "kernel" or owns(n), can_write_inplace)
    folds = {} if check_nans else _pad_adds(graph, plan)
    frees = _moved_frees(graph, plan, folds)
    skipped = {p for p in folds.values()}
    title = graph.meta.get("title", graph.name)
    lines = [f"# tracegrad {'cpu' if kernels else 'numpy'} | {title} | {len(graph.nodes)} ops | peak {_kib(plan.peak_bytes)} of intermediates",
             f"def {graph.name}({', '.join(v.name for v in graph.inputs)}):"]
    last = None
    for i, n in enumerate(graph.nodes):
        if i in skipped:         # a zero pad added into another buffer: the add writes its region
            continue
        if n.prov is not None and n.prov != last:
            lines.append(f"    # {n.prov}")
            last = n.prov
        args = [v.name for v in n.inputs]
        ins, outs = [v.type for v in n.inputs], [v.type for v in n.outputs]
        if i in folds:
            pad, into = graph.nodes[folds[i]], plan.reuse[i].name
            region = ", ".join(f"{lo}:{lo + size}" for (lo, _), size in zip(pad.attrs["pads"], pad.inputs[0].shape))
            lines.append(f"    {into}[{region}] += {pad.inputs[0].name}")
            expr = into
        elif n.op == "kernel":
            expr = f"{n.attrs['name']}({', '.join(args)})"
        elif i in plan.reuse:
            # NOTE: an integer division floors (np.divide would make floats, which an integer out refuses)
            ufunc = "np.floor_divide" if n.op == "div" and outs[0].dtype.is_integer else UFUNCS[n.op]
            expr = f"{ufunc}({', '.join(args)}, out={plan.reuse[i].name})"
        else:
            expr = lower(n.op, args, ins, outs, dict(n.attrs))
        if n.op in INDEXED:      # NOTE: numpy would wrap a negative index and name no op or line
            x, idx = n.inputs[0], n.inputs[1]
            lines.append(f"    check_index({idx.name}, {x.type.shape[n.attrs['axis']]}, {index_op(n)!r}, "
                         f"{site_where(n, graph)!r})")
        names = ", ".join(o.name for o in n.outputs)
        note = ", ".join(str(t) for t in outs) + (f"  {n.tag}" if n.tag else "")
        code = f"{names} = {expr}" if n.outputs else expr
        lines.append(f"    {code:<56}  # {note}" if note else f"    {code}")
        if check_nans:
            for o in n.outputs:
                if o.type.dtype.is_floating:
                    lines.append(f"    check_nan({o.name}, {(o.name + ' = ' + n.op + ' at ' + str(n.prov or '?'))!r})")
        if frees.get(i):
            lines.append(f"    del {', '.join(v.name for v in frees[i])}")
    if any(n.op == "send" for n in graph.nodes):      # sends return at once; done before the step returns
        lines.append("    comm.wait_sends()")
    outs = ", ".join(v.name for v in graph.outputs)
    lines.append(f"    return ({outs}{',' if len(graph.outputs) == 1 else ''})")
    source = "\n".join(lines) + "\n"
    ns = namespace(comm)
    ns["check_nan"] = check_nan
    ns["check_index"] = check_index
    ns.update(kernels)
    exec(compile(source, f"<tracegrad numpy {title}>", "exec"), ns)
    return NumpyProgram(source, ns[graph.name], plan)
