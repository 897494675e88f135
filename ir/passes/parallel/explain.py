"""What `step.explain()` says about a parallel plan: the style each parameter got, the state this
rank holds, and the bytes each collective moves per step (what one rank sends, as a ring
algorithm sends it)."""
from __future__ import annotations

from collections import defaultdict

from ...graph import Graph

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "send")


def sent_bytes(node) -> int:
    """Bytes one rank sends for `node`: ring all_reduce 2(n-1)/n of the buffer, all_gather and
    reduce_scatter (n-1)/n of the whole, send all of it."""
    n = len(node.attrs.get("group", (0,)))
    if node.op == "send":
        return node.inputs[0].type.nbytes
    if n == 1:
        return 0
    if node.op == "all_reduce":
        return 2 * (n - 1) * node.inputs[0].type.nbytes // n
    if node.op == "all_gather":
        return (n - 1) * node.outputs[0].type.nbytes // n
    if node.op == "reduce_scatter":
        return (n - 1) * node.inputs[0].type.nbytes // n
    return node.inputs[0].type.nbytes        # broadcast: the root's whole buffer


def plan_lines(graph: Graph) -> list[str]:
    """The tp plan of every parameter, the cp split, and the pipeline's stages, schedule and
    bubble, from the meta the passes left on `graph`."""
    lines = []
    choices = graph.meta.get("tp_plan")
    if choices:
        lines.append(f"  tp plan (tp={graph.meta.get('tp_size')}): parameter, module, style, split")
        lines += [f"    {c}" for c in choices]
    if graph.meta.get("cp_size"):
        n = graph.meta["cp_size"]
        lines.append(f"  cp: the sequence in {2 * n} blocks, rank r holding r and {2 * n - 1}-r (zig-zag); ring attention "
                     f"over {n} ranks; parameters whole, their gradients summed over the ring")
    pp = graph.meta.get("pp")
    if pp:
        lines.append(f"  pp: stage {pp['stage']} of {pp['stages']}, {pp['schedule'].upper()}, {pp['microbatches']} "
                     f"micro-batches, bubble {pp['bubble']:.1%} = (pp-1)/(m+pp-1)")
        for s, units in pp["units"].items():
            lines.append(f"    stage {s}: {', '.join(units)}")
    return lines


def state_lines(traced: Graph, graph: Graph) -> list[str]:
    """The parameters and optimizer state this rank holds between steps, in bytes, against the
    whole (what one device holds): split by tp, kept by the stage that uses it under pp."""
    names = {k for k, _ in graph.meta.get("state_io", ())}
    if not names:
        return []
    whole = sum(v.type.nbytes for v in traced.inputs if v.name in names)
    held = sum(v.type.nbytes for v in graph.inputs if v.name in names)
    split, owned = graph.meta.get("tp_shards", {}), graph.meta.get("pp_owned", {})
    kept = [k for k, s in owned.items() if s == graph.meta.get("pp", {}).get("stage")]
    parts = ([f"{len(split)} split over tp"] if split else []) + (
        [f"{len(kept)} of this stage's, {len(owned) - len(kept)} of other stages' not held"] if owned else [])
    return [f"  state held by this rank: {held:,d} of {whole:,d} B ({held / max(whole, 1):.1%}); "
            f"{len(names)} tensors{': ' + ', '.join(parts) if parts else ''}"]


def collective_lines(graph: Graph, mesh=None) -> list[str]:
    """One line per (phase, op, mesh axis): how many, and the bytes a rank sends per step."""
    rows = defaultdict(lambda: [0, 0])
    for n in graph.nodes:
        if n.op in COLLECTIVES:
            key = (n.phase, n.op, _axis(tuple(n.attrs.get("group", ())), mesh))
            rows[key][0] += 1
            rows[key][1] += sent_bytes(n)
    if not rows:
        return []
    lines = ["  collectives per step (bytes this rank sends):"]
    for (phase, op, axis), (count, nbytes) in sorted(rows.items()):
        lines.append(f"    {phase:<9} {op:<15} x{count:<4} over {axis:<12} {nbytes:>12,d} B")
    return lines


def _axis(group: tuple, mesh) -> str:
    """The mesh axis whose groups hold `group` ("tp", "dp", ...), else its size."""
    if mesh is not None:
        for axis in ("tp", "cp", "pp", "dp"):
            if getattr(mesh, axis) > 1 and any(set(group) <= set(g) for g in mesh.groups(axis)):
                return f"{axis} ({len(group)} ranks)"
    return f"{len(group)} ranks"
