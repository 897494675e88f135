"""The fused graph as text (STYLE.md item 4) and as a kernel report for `step.explain()`."""
from __future__ import annotations

from ..graph import Graph, Node
from ..ops.registry import ELEMENTWISE, get
from .fusion_plan import CONSTS, VIEWS, classify


def kernel_lines(graph: Graph) -> dict[int, str]:
    """`# k3 ...` notes for the nodes of a fused graph that launch something."""
    notes, k = {}, 0
    for i, n in enumerate(graph.nodes):
        if n.op == "kernel":
            notes[i] = f"k{k} {n.attrs['info']}"
            k += 1
        elif classify(n) == "extern":
            notes[i] = f"k{k} {'template' if get(n.op).is_composite else 'extern'} {n.op}"
            k += 1
    return notes


def format_fused(graph: Graph) -> str:
    """The fused graph as STYLE.md item 4 shows it: one line per kernel, named by kind and origin."""
    from ..printer import format_graph, format_node
    notes = kernel_lines(graph)
    pos = {id(n): i for i, n in enumerate(graph.nodes)}

    def line(n: Node) -> str:
        if n.op == "kernel":
            outs = n.outputs
            lhs = f"{outs[0].name}: {outs[0].type}" if len(outs) == 1 else ", ".join(o.name for o in outs)
            text = f"{lhs} = {n.attrs['name']}({', '.join(v.name for v in n.inputs)})"
        else:
            text = format_node(n).split("  # ")[0]
        note = notes.get(pos[id(n)])
        return f"{text:<48}  # {note}" if note else text
    return format_graph(graph, body=line)


def flops(n: Node) -> int:
    """A rough count of floating-point operations (matmul 2MNK, attention 4 T S D per head, else one
    per element per op)."""
    if n.op == "kernel":
        return sum(flops(m) for m in n.attrs["body"].nodes)
    if n.op == "matmul":
        a, b = n.inputs
        return 2 * n.out.type.numel * a.shape[-1]
    if n.op.startswith("scaled_dot_product_attention"):
        q, k = n.inputs[0].type, n.inputs[1].type
        return (4 if n.op.endswith("attention") else 10) * q.numel * k.shape[-2]
    if n.op in VIEWS + CONSTS:
        return 0
    kind = get(n.op).kind
    if kind in ELEMENTWISE or kind in ("reduce", "composite"):
        return max(v.type.numel for v in list(n.inputs) + list(n.outputs))
    return 0


def explain_kernels(graph: Graph, times: dict | None = None) -> list[str]:
    """One entry per launch of a fused graph: name, kind, ops, provenance, bytes moved, flops, and
    with `times` (launch number -> ms) its time and share, plus the slowest launches first."""
    notes = kernel_lines(graph)
    lines = [f"  kernels: {graph.meta.get('kernels', len(notes))} launches"]
    total = sum(times.values()) if times else 0.0
    if times:
        lines.append(f"  profiled: {total:.3f} ms a step; slowest launches:")
        names = {int(notes[i].split()[0][1:]): (n.attrs["name"] if n.op == "kernel" else n.op)
                 for i, n in enumerate(graph.nodes) if i in notes}
        for k, ms in sorted(times.items(), key=lambda t: -t[1])[:10]:
            lines.append(f"    k{k:<5} {ms:8.3f} ms {100 * ms / total:5.1f}%  {names.get(k, '?')}")
    for i, n in enumerate(graph.nodes):
        if i not in notes:
            continue
        nbytes = sum(v.type.nbytes for v in set(n.inputs) | set(n.outputs))
        if n.op == "kernel":
            body = n.attrs["body"]
            ops = [m.op for m in body.nodes if m.op not in VIEWS]
            head = f"{n.attrs['name']}  ({len(ops)} ops: {', '.join(dict.fromkeys(ops))})"
            provs = list(dict.fromkeys(m.prov for m in body.nodes if m.prov is not None))
        else:
            head, provs = f"{n.op}", [n.prov] if n.prov else []
        k = int(notes[i].split()[0][1:])
        share = f"  [{times[k]:.3f} ms, {100 * times[k] / total:.1f}%]" if times and k in times and total else ""
        lines.append(f"  {notes[i]:<36} {head}{share}")
        lines.append(f"      {nbytes:,} bytes, {flops(n):,} flop; writes {', '.join(o.name for o in n.outputs)}")
        lines += [f"      {p}" for p in provs[:4]]
    return lines
