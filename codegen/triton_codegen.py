"""The Triton backend's code generator: a fused graph -> kernel sources + the host function that
launches them in order.

    # tracegrad triton | f#0 | 3 kernels | target interpret
    def f(x, w, b):
        x = rt.contiguous(x)
        # demo.py:7  y = layer_norm(x, w, b)
        t3 = rt.empty((4, 8), rt.f32, 'cpu')
        rt.launch(k0_red_fused_layer_norm, (1,), x, w, b, t3, XBLOCK=4, RBLOCK=8)
        ...

The host function calls what the runtime supplies as `rt` (`rt.launch`, `rt.empty`, the extern ops
`rt.matmul`, `rt.extern("cross_entropy", ...)`, dtypes `rt.f32`); `triton_program` runs it. Block
sizes come from a small table keyed by problem size and target ("interpret": big blocks, few
programs; "cuda": H100-sized blocks); the kernel source is the same for both targets.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.graph import Graph, Node
from ..ir.passes.fusion import classify, kernel_lines
from ..ir.ops import get
from ..ir.passes.memory import last_uses, plan_memory, state_updates
from .index_sites import site
from .nan_sites import NanSites
from .kernel_source import KernelSource, next_pow2
from .triton_kernel import PERSISTENT_MAX, write_kernel

TEMPLATES = frozenset({"cross_entropy", "cross_entropy_bwd", "scaled_dot_product_attention",
                       "scaled_dot_product_attention_bwd", "paged_attention"})
HEAD_DIMS = (16, 32, 64, 128)


def template_applies(n: Node) -> bool:
    """Whether a kept composite fits its template (else it is decomposed and fused)."""
    if n.op not in TEMPLATES:
        return False
    if any(v.type.numel == 0 for v in n.inputs):
        return False     # nothing to launch: the decomposition handles empty inputs
    if n.op == "paged_attention":     # any power-of-two head dim from 8: the kernel broadcasts, no tl.dot
        q = n.inputs[0].type
        return q.shape[-1] >= 8 and q.shape[-1] & (q.shape[-1] - 1) == 0 and q.dtype.is_floating and \
            q.dtype.name != "float64"
    if n.op.startswith("cross_entropy"):
        # NOTE: the template computes in fp32; float64 logits take the decomposition
        return n.inputs[0].type.dtype.name in ("float32", "float16", "bfloat16") and (
            n.op == "cross_entropy" or n.attrs["reduction"] != "none")
    q, k, v = (x.type for x in n.inputs[:3])
    fixed = 3 if n.op == "scaled_dot_product_attention" else 6
    return (len(n.inputs) == fixed and q.ndim in (3, 4) and q.shape[-1] in HEAD_DIMS and k.shape == v.shape
            and q.dtype.name in ("float32", "float16", "bfloat16"))


CONFIG = {"persistent_max": PERSISTENT_MAX, "loop_rblock": {"interpret": 1024, "cuda": None}}


@dataclass
class Generated:
    host: str                                      # the host function's source
    name: str                                      # its name
    kernels: list[KernelSource] = field(default_factory=list)
    notes: dict = field(default_factory=dict)      # kernel name -> provenance / origin comment lines
    source: str = ""                               # everything, for `step.ir("kernels")`
    inplace: list = field(default_factory=list)    # outputs written over a dying input (cross_entropy_bwd)
    timed_host: str = ""                           # the host function with `rt.mark(k)` before launch k
    sites: list = field(default_factory=list)      # checked index sites; the host names row k `chk{k}`
    nan_wheres: list = field(default_factory=list)  # check_nans: the results `nan.scan` numbers


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def launch_config(ks: KernelSource, target: str) -> tuple[tuple, dict]:
    """(grid, meta) for a kernel on a target: the block-size table."""
    cuda = target == "cuda"
    if ks.parts:     # foreach
        meta, grid = {}, 0
        for k, n in enumerate(ks.parts):
            xb = min(1024, max(128, next_pow2(n))) if cuda else min(4096, next_pow2(n))
            meta[f"XBLOCK{k}"] = xb
            grid += _cdiv(n, xb)
        if cuda:
            meta["num_warps"] = 4
        return (grid,), meta
    p = ks.plan
    if p.kind == "pointwise":
        xb = min(1024, max(128, next_pow2(p.xnumel))) if cuda else min(4096, next_pow2(p.xnumel))
        meta = dict(XBLOCK=xb)
        if cuda:
            meta["num_warps"] = 4 if xb >= 512 else 2
        return (_cdiv(p.xnumel, xb),), meta
    if p.outer:
        return _outer_config(ks, target)
    if ks.persistent:
        rb = next_pow2(p.rnumel)
        budget = 4096 if not cuda else (1024 if rb <= 1024 else rb)
        xb = max(1, min(next_pow2(p.xnumel), budget // rb, 64))
    else:
        itemsize = max(v.type.dtype.itemsize for v in ks.args)
        rb = CONFIG["loop_rblock"][target] or (2048 if itemsize >= 4 else 4096)
        rb = min(rb, next_pow2(p.rnumel))
        xb = 1 if cuda else max(1, min(next_pow2(p.xnumel), 4096 // rb))
    meta = dict(XBLOCK=xb, RBLOCK=rb)
    if cuda:
        meta["num_warps"] = max(2, min(16, xb * rb // 512)) if ks.persistent else 8
    return (_cdiv(p.xnumel, xb),), meta


def _outer_config(ks: KernelSource, target: str) -> tuple[tuple, dict]:
    """A column reduction: x lanes run along the contiguous axis (Triton orders the block by the
    addresses' contiguity), so blocks are wide in x and short in r: [64, 64] when the column fits
    (the two-stage split makes it fit), else [128, 16] looping down the column."""
    p, cuda = ks.plan, target == "cuda"
    x = next_pow2(p.xnumel)
    if ks.persistent:
        rb = next_pow2(p.rnumel)
        xb = max(1, min(x, 4096 // rb, 256))
    elif cuda:
        xb = min(x, 128)
        rb = max(1, min(next_pow2(p.rnumel), 2048 // xb))
    else:
        rb = min(CONFIG["loop_rblock"][target], next_pow2(p.rnumel))
        xb = max(1, min(x, 4096 // rb))
    meta = dict(XBLOCK=xb, RBLOCK=rb)
    if cuda:
        meta["num_warps"] = max(2, min(8, xb * rb // 256))
    return (_cdiv(p.xnumel, xb),), meta


def _tuple(t) -> str:
    return f"({t[0]},)" if len(t) == 1 else f"({', '.join(map(str, t))})"


EXTERN_CALLS = {
    "matmul": "rt.matmul({0}, {1})",
    "index_add": "rt.index_add({0}, {1}, {2}, {axis})",
    "scatter_add": "rt.scatter_add({0}, {1}, {2}, {axis})",
    "reshape": "rt.reshape({0}, {shape})",
    "permute": "rt.permute({0}, {dims})",
    "expand": "rt.expand({0}, {shape})",
    "slice": "rt.slice_({0}, {starts}, {stops}, {steps})",
    "stop_gradient": "{0}",
    "full": "rt.full({shape}, {value!r}, rt.{dtype}, {device!r})",
    "iota": "rt.iota({shape}, {axis}, rt.{dtype}, {device!r})",
}


# ops outside the kernels whose index operand the host asks the device to check (`chk=` row)
CHECKED = ("index_add", "scatter_add", "cross_entropy")


def checked_site(n: Node, title: str):
    """The flag-buffer site of a template or extern op that indexes (cross-entropy, scatter-adds)."""
    if n.op == "cross_entropy":
        return site(n, title, n.inputs[0].type.shape[1], n.attrs["ignore_index"])
    return site(n, title, n.inputs[0].type.shape[n.attrs["axis"]])


def _call(n: Node) -> str:
    args = [v.name for v in n.inputs]
    a = {k: (v.short if hasattr(v, "short") else v) for k, v in n.attrs.items()}
    if n.op in EXTERN_CALLS:
        return EXTERN_CALLS[n.op].format(*args, **a)
    kw = ", ".join(f"{k}={v!r}" if not hasattr(n.attrs[k], "short") else f"{k}=rt.{v}" for k, v in a.items())
    if n.op in TEMPLATES:   # kept only where the template applies: call it by name
        return f"rt.{n.op}({', '.join(args + ([kw] if kw else []))})"
    return f"rt.extern({n.op!r}, [{', '.join(args)}]{', ' + kw if kw else ''})"


# ops whose host call returns a fresh buffer (never a view of an input)
_OWNING_KINDS = ("unary", "binary", "ternary", "cast", "reduce", "matmul", "creation", "random", "index")


def _owns(n: Node) -> bool:
    if n.op == "kernel" or n.op in TEMPLATES:
        return True
    try:
        return get(n.op).kind in _OWNING_KINDS
    except Exception:   # an op the registry does not know: assume it may alias
        return False


def _inplace_ok(n: Node) -> bool:
    """cross_entropy_bwd's template can write dlogits over the logits (input 0)."""
    return n.op == "cross_entropy_bwd" and template_applies(n)


def generate(graph: Graph, target: str = "interpret", check_nans: bool = False) -> Generated:
    """Kernel sources and host function of a fused graph (see the module docstring); with
    `check_nans` every float result is scanned on the device and the flag read once at the end;
    the first NaN raises, naming its node (runtime/nan_flags.py)."""
    title = graph.meta.get("title", graph.name)
    notes = kernel_lines(graph)
    last = last_uses(graph)
    pinned = set(graph.inputs) | set(graph.outputs)
    # dying logits buffers (not pinned, no live alias) that cross_entropy_bwd overwrites
    reuse = {i: x for i, x in plan_memory(graph, _owns, _inplace_ok).reuse.items()
             if x is graph.nodes[i].inputs[0]}
    inplace = []
    updates = state_updates(graph, _owns)
    updated = {x for pairs in updates.values() for x in pairs.values()}
    lines = [f"def {graph.name}({', '.join(v.name for v in graph.inputs)}):"]
    for v in graph.inputs:
        lines.append(f"    {v.name} = rt.{'writable' if v in updated else 'contiguous'}({v.name})")
    kernels, prov_notes, prev, loose = [], {}, None, set()
    sites = []      # the program's checked index sites: row k of its flag buffer is sites[k]
    nans = NanSites() if check_nans else None   # what scanned value k is (runtime/nan_flags.py)
    marks = []      # (line index, launch number): where the profiled host function times a launch
    for i, n in enumerate(graph.nodes):
        if n.prov is not None and n.prov != prev:
            lines.append(f"    # {n.prov}")
            prev = n.prov
        outs = ", ".join(o.name for o in n.outputs)
        note = f"  # {notes[i]}" if i in notes else ""
        if note:
            marks.append((len(lines), int(notes[i].split()[0][1:])))
        if n.op in TEMPLATES:
            loose.update(n.outputs)
        if n.op == "kernel" and n.attrs["kind"] == "template":
            lines += _template_call(n, note)
        elif n.op == "kernel" and _empty(n.attrs["body"]):
            # NOTE: a kernel over zero elements (or reducing an empty axis) has no grid to launch;
            # its ops run one by one on the host, where an empty sum is 0 as in PyTorch
            lines.append(f"    # {n.attrs['name']}: zero-size, run op by op{note}")
            lines += [f"    {', '.join(o.name for o in m.outputs)} = {_call(m)}" for m in n.attrs["body"].nodes]
        elif n.op == "kernel":
            body = n.attrs["body"]
            ks = write_kernel(n.attrs["name"], body, n.attrs["kind"], CONFIG["persistent_max"], title, nans)
            kernels.append(ks)
            prov_notes[ks.name] = _origins(n)
            for o in n.outputs:
                x = updates.get(i, {}).get(o)
                if x is not None and ks.can_overwrite(x, o):
                    lines.append(f"    {o.name} = {x.name}  # updated in place")
                    continue
                lines.append(f"    {o.name} = rt.empty({_tuple(o.shape) if o.shape else '()'}, rt.{o.type.dtype.short}, "
                             f"{o.type.device!r})")
            grid, meta = launch_config(ks, target)
            kw = ", ".join(f"{k}={v}" for k, v in meta.items())
            # NOTE: kernels index row-major; a template may hand back a strided view (attention's O)
            names = [f"rt.contiguous({v.name})" if v in loose else v.name for v in ks.args]
            if ks.sites:
                names.append(f"chk{len(sites)}")
                sites += ks.sites
            if nans is not None:
                names.append("nan.buf")
            lines.append(f"    rt.launch({ks.name}, {grid}, {', '.join(names)}, {kw}){note}")
        elif n.op in CHECKED:   # the index is checked on the device too (index_flags.py)
            lines.append(f"    {outs} = {_call(n)[:-1]}, chk=chk{len(sites)}){note}")
            sites.append(checked_site(n, title))
        elif classify(n) in ("view", "const") or n.op in EXTERN_CALLS:
            lines.append(f"    {outs} = {_call(n)}{note}")
        elif i in reuse:
            inplace.append(n.outputs[0].name)
            lines.append(f"    {outs} = {_call(n)[:-1]}, inplace=True){note}  # over {reuse[i].name}")
        else:
            lines.append(f"    {outs + ' = ' if outs else ''}{_call(n)}{note}")
        # NOTE: a view's NaN is its source's, scanned already; kernels scan their values themselves
        if nans is not None and classify(n) != "view" and n.op != "kernel":
            for o in n.outputs:
                if o.type.dtype.is_floating:
                    lines.append(f"    nan.scan({o.name}, {nans.add(o.name, n.op, n)})")
        dead = [v for v in dict.fromkeys(n.inputs + n.outputs) if last.get(v) == i and v not in pinned]
        if dead:
            lines.append(f"    del {', '.join(v.name for v in dead)}")
    outs = ", ".join(v.name for v in graph.outputs)
    if check_nans:
        lines.append("    nan.check()   # the step's one read of the NaN flag")
    lines.append(f"    return ({outs}{',' if len(graph.outputs) == 1 else ''})")
    host = "\n".join(lines) + "\n"
    timed = list(lines)
    timed.insert(-1, "    rt.mark(-1)")
    for at, k in reversed(marks):
        timed.insert(at, f"    rt.mark({k})")
    header = (f"# tracegrad triton | {title} | {graph.meta.get('summary', '')} | target {target}\n")
    parts = [header, host]
    for ks in kernels:
        parts.append("\n" + prov_notes[ks.name] + ks.source)
    return Generated(host, graph.name, kernels, prov_notes, "\n".join(parts), inplace, "\n".join(timed) + "\n",
                     sites, nans.wheres if nans is not None else [])


def _empty(body: Graph) -> bool:
    return any(v.type.numel == 0 for v in list(body.inputs) + [o for m in body.nodes for o in m.outputs])


def _template_call(n: Node, note: str) -> list[str]:
    """Host lines for a matmul template with its epilogue: the operands' views, then one call."""
    body, t = n.attrs["body"], n.attrs["body"].meta["template"]
    prod = {o: m for m in body.nodes for o in m.outputs}
    lines, done = [], set(body.inputs)

    def operand(v):
        if v is None:
            return "None"
        if v not in done:
            m = prod[v]
            operand(m.inputs[0])
            lines.append(f"    {v.name} = {_call(m)}")
            done.add(v)
        return v.name
    a, b, bias, res = (operand(t[k]) for k in ("a", "b", "bias", "residual"))
    y = t["out"]
    lines.append(f"    {y.name} = rt.matmul_epilogue({a}, {b}, {bias}, {t['activation']!r}, {res}, "
                 f"{_tuple(y.shape)}){note}")
    return lines


def _origins(n: Node) -> str:
    """Comment lines above a kernel: what it fuses and the user lines it came from."""
    body = n.attrs["body"]
    ops = [m for m in body.nodes]
    lines = [f"# {n.attrs['name']}: {n.attrs['info']}, {len(ops)} ops",
             f"#   reads  {', '.join(f'{v.name}: {v.type}' for v in body.inputs)}",
             f"#   writes {', '.join(f'{v.name}: {v.type}' for v in body.outputs)}"]
    seen = []
    for m in ops:
        if m.prov is not None and m.prov not in seen:
            seen.append(m.prov)
    lines += [f"#   {p}" for p in seen[:8]]
    return "\n".join(lines) + "\n"
