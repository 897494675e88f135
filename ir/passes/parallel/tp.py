"""Tensor parallelism as a graph pass: `tensor_parallel(graph, group, rank, plan)` rewrites a
single-device step (forward, backward and optimizer update) into the program of one rank of
the tp group.

Every Linear (a forward `matmul` whose weight is a graph input, through a `permute` for
`x @ W.T`) and every Embedding (`take` of an input table) gets a style from the `Plan`; the
weight is sliced to this rank's block, and the sharding rules (`rules.py`) carry the split
through everything downstream: heads through attention, partial sums to one `all_reduce` per
column/row pair in the forward and one in the backward, gradients and optimizer state of a split
weight split alike. The graph's inputs and outputs stay whole (a split result is all-gathered
before it leaves), so the step returns the single-device values on every rank.
"""
from __future__ import annotations

import math
from dataclasses import replace

from ...graph import Graph, Node, Value
from .builder import DValue, ParallelPlanError, ShardBuilder
from .plan import Choice, Plan
from .spec import R, S


def tensor_parallel(graph: Graph, group: tuple, rank: int, plan=None, shard_state: bool = True) -> Graph:
    """With `shard_state`, the state the step reads and writes back (`graph.meta["state_io"]`:
    parameters, optimizer state) whose block is all this rank uses arrives and leaves as that
    block: a graph input of the local shape, its write-back not gathered; `meta["tp_shards"]`
    names them ({input name: (dim, groups)}, `meta["tp_shard_outputs"]` {output index: input name})
    so the runtime keeps only the block between steps (`runtime/shards.py`)."""
    plan = Plan.of(plan)
    whole, ins, outs = _rewrite(graph, group, rank, plan, {})
    shards = _state_shards(graph, ins, outs, len(group)) if shard_state else {}
    if not shards:
        return whole
    g = _rewrite(graph, group, rank, plan, shards)[0]
    pairs = dict(graph.meta.get("state_io", ()))
    return g.with_(meta={**g.meta, "tp_shards": {k: (s.dim, s.groups) for k, s in shards.items()},
                         "tp_shard_outputs": {j: k for k, j in pairs.items() if k in shards}})


def _state_shards(graph: Graph, ins: dict, outs: list, n: int) -> dict:
    """{input name: Spec} of the state pairs (input, its write-back) that one split serves: the
    write-back is split, and the input was sliced that way or not at all (momentum, read whole
    only by elementwise ops whose results meet the split gradient)."""
    out = {}
    for name, j in graph.meta.get("state_io", ()):
        spec = outs[j]
        v = next(v for v in graph.inputs if v.name == name)
        if spec.kind == "S" and ins.get(name, {spec}) == {spec} and spec.fits(v.shape, n):
            out[name] = spec
    return out


def _rewrite(graph: Graph, group: tuple, rank: int, plan: Plan, shards: dict):
    """(this rank's graph, {input name: specs it was converted to}, the spec of each output)."""
    b = ShardBuilder(graph, group, rank, "tp")
    env: dict[Value, DValue] = {v: b.wrap(v) for v in graph.inputs}
    for i, v in enumerate(graph.inputs):
        if v.name in shards:
            spec = shards[v.name]
            local = Value(v.name, v.type.with_(shape=spec.local(v.shape, b.n)))
            b.out.inputs[i] = local
            env[v] = DValue(local, spec, v.type)
    first = {h: v.name for v, h in env.items()}
    linears, tables = _find_weights(graph)
    choices: dict[str, Choice] = {}
    for node in graph.nodes:
        b.node, b.out.phase = node, node.phase
        start = len(b.out.nodes)
        ins = [env[v] for v in node.inputs]
        with b.out.scope(node, node.tag):
            if node in linears:
                ins = _plan_linear(b, node, ins, *linears[node], plan, choices)
                env[node.inputs[1]] = ins[1]        # the backward reads the weight split, too
            elif node in tables:
                ins = _plan_embedding(b, node, ins, tables[node], plan, choices)
                env[node.inputs[0]] = ins[0]        # the update reads the table split, too
            outs = b.emit(node.op, ins, dict(node.attrs))
        env.update(zip(node.outputs, _adopt_names(b, start, node.outputs, list(outs))))
    b.node = None
    keep = {j: shards[k] for k, j in graph.meta.get("state_io", ()) if k in shards}
    specs = [env[v].spec for v in graph.outputs]
    with b.out.scope(None, "tp(output)"):
        outputs = [b.to(env[v], keep.get(j, R)).local for j, v in enumerate(graph.outputs)]
    converted: dict[str, set] = {}
    for h, spec in b._cache:
        if h in first:
            converted.setdefault(first[h], set()).add(spec)
    for v, h in env.items():          # a weight's split handle (the backward reads it too)
        if v in graph.inputs and h.spec.kind == "S":
            converted.setdefault(v.name, set()).add(h.spec)
    g = b.out.finish(outputs, meta={**graph.meta, "tp_plan": tuple(choices.values()), "tp_size": b.n})
    return g, converted, specs


def _find_weights(graph: Graph):
    """Forward matmuls reading an input weight -> (weight, transposed?, fused chunks); takes of
    an input table -> whether their indices are tokens."""
    inputs = set(graph.inputs)
    prod = graph.producers()
    users = graph.users()
    linears, tables = {}, {}
    for n in graph.nodes:
        if n.phase != "forward":
            continue
        if n.op == "matmul" and len(n.inputs[1].shape) == 2:
            w = n.inputs[1]
            p = prod.get(w)
            if w in inputs:
                linears[n] = (w, False, _fused_chunks(n.out, users), _heads(n.out, users))
            elif p is not None and p.op == "permute" and p.inputs[0] in inputs and tuple(p.attrs["dims"]) == (1, 0):
                linears[n] = (p.inputs[0], True, _fused_chunks(n.out, users), _heads(n.out, users))
        elif n.op == "take" and n.inputs[0] in inputs and len(n.inputs[0].shape) == 2 and n.attrs["axis"] == 0:
            tables[n] = _from_input(n.inputs[1], inputs, prod)
    return linears, tables


def _from_input(v: Value, inputs, prod) -> bool:
    """Whether indices are data (token ids from an argument), not made in the step (positions)."""
    while v not in inputs:
        p = prod.get(v)
        if p is None or p.op not in ("reshape", "cast", "slice", "expand", "permute"):
            return False
        v = p.inputs[0]
    return True
    return linears, tables


def _fused_chunks(v: Value, users) -> int:
    """g when the Linear's output is split into g equal parts along its features (q|k|v): found
    by following it through reshapes and bias adds to the slices that cut it."""
    size = v.shape[-1]
    frontier, seen = [v], set()
    while frontier:
        x = frontier.pop()
        if x in seen:
            continue
        seen.add(x)
        cuts = [n for n in users.get(x, ()) if n.op == "slice" and n.phase == "forward"]
        widths = {n.attrs["stops"][-1] - n.attrs["starts"][-1] for n in cuts}
        if cuts and len(widths) == 1 and x.shape[-1] == size:
            w = widths.pop()
            if 0 < w < size and size % w == 0 and all(n.attrs["starts"][-1] % w == 0 for n in cuts):
                return size // w
        frontier += [o for n in users.get(x, ()) if n.op in ("reshape", "add") and n.phase == "forward"
                     for o in n.outputs if o.shape and o.shape[-1] == size]
    return 1


def _heads(v: Value, users):
    """(heads, head size) when the Linear's output (or each fused chunk of it) is viewed as
    [..., heads, head size] in the forward, else None."""
    frontier, seen = [v], set()
    while frontier:
        x = frontier.pop()
        if x in seen:
            continue
        seen.add(x)
        for n in users.get(x, ()):
            if n.phase != "forward":
                continue
            shp, out = x.shape, n.outputs[0].shape
            if n.op == "reshape" and len(out) >= 2 and out[:-2] == shp[:-1] and out[-2] * out[-1] == shp[-1]:
                return out[-2], out[-1]
            if n.op in ("reshape", "add", "slice") and out and math.prod(out[:-1]) == math.prod(shp[:-1]):
                frontier.append(n.outputs[0])
    return None


def _plan_linear(b: ShardBuilder, node: Node, ins, weight: Value, transposed: bool, groups: int, heads, plan: Plan,
                 choices: dict) -> list:
    a, w = ins
    module = node.prov.module if node.prov else ""
    k_in, n_out = w.type.shape
    style = plan.style(module, "linear")
    why = ""
    if style == "auto":
        style = "row" if a.spec.kind == "S" and a.spec.dim == len(a.type.shape) - 1 else "column"
        if style == "column" and n_out % (b.n * groups):
            style, why = "replicate", f"{n_out} output features do not split over tp={b.n}"
        elif style == "column" and heads and heads[0] < b.n:
            # NOTE: fewer heads than ranks (grouped-query k/v): every rank needs whole heads, as in
            # Megatron-LM the k/v projections are kept whole and each rank uses the heads it needs
            style, why = "replicate", f"{heads[0]} heads of {heads[1]} are fewer than tp={b.n}"
    if style == "column" and heads and heads[0] % b.n:
        fused = f" (in each of {groups} fused parts)" if groups > 1 else ""
        raise ParallelPlanError(
            f"{b.at()}: {module} is column-parallel, but its output [{n_out}] is {heads[0]} heads of {heads[1]}"
            f"{fused}, and {heads[0]} heads do not split over tp={b.n}; use a tp size that divides {heads[0]}, "
            f"or keep it whole: plan={{'{module}': 'replicate'}}")
    elif style in ("column", "row"):
        size = n_out // groups if style == "column" else k_in
        if size % b.n:
            raise ParallelPlanError(f"{b.at()}: {module} is {style}-parallel, but its {'output' if style == 'column' else 'input'} "
                                    f"features ({size}) do not split over tp={b.n}")
    if style == "column":
        a, w = b.to(a, R), replace(b.to(w, S(1, groups)), origin=module)
    elif style == "row":
        a, w = b.to(a, S(len(a.type.shape) - 1)), replace(b.to(w, S(0)), origin=module)
    else:
        a, w = b.to(a, R), b.to(w, R)
    dim = w.spec.dim if not transposed or w.spec.kind != "S" else 1 - w.spec.dim
    spec = S(dim, w.spec.groups) if w.spec.kind == "S" else R
    choices.setdefault(weight.name, Choice(weight.name, module, style, str(spec),
                                           spec.local(weight.shape, b.n), why))
    return [a, w]


def _plan_embedding(b: ShardBuilder, node: Node, ins, tokens: bool, plan: Plan, choices: dict) -> list:
    table, idx = ins
    module = node.prov.module if node.prov else ""
    rows = table.type.shape[0]
    style, why = plan.style(module, "embedding"), ""
    if style == "auto":
        style = "vocab" if rows % b.n == 0 and tokens else "replicate"
        why = "" if style == "vocab" else f"{rows} rows do not split over tp={b.n}" if tokens else \
            "indexed by positions, not tokens"
    elif style == "vocab" and rows % b.n:
        raise ParallelPlanError(f"{b.at()}: {module} is vocab-parallel, but its {rows} rows do not split over tp={b.n}")
    if style == "vocab":
        table = replace(b.to(table, S(0)), origin=module)
    name = node.inputs[0].name
    choices.setdefault(name, Choice(name, module, style, str(table.spec), table.spec.local(table.type.shape, b.n), why))
    return [table, idx]


def _adopt_names(b: ShardBuilder, start: int, old: tuple, outs: list) -> list:
    """The results keep the names they had in the single-device graph, so the stages diff."""
    nodes = b.out.nodes
    for i, (ov, dv) in enumerate(zip(old, outs)):
        j = next((j for j in range(len(nodes) - 1, start - 1, -1) if dv.local in nodes[j].outputs), None)
        if j is None:
            continue
        nv = Value(ov.name, dv.local.type)
        nodes[j] = nodes[j].with_(outputs=tuple(nv if o is dv.local else o for o in nodes[j].outputs))
        for k in range(j + 1, len(nodes)):
            if dv.local in nodes[k].inputs:
                nodes[k] = nodes[k].with_(inputs=tuple(nv if x is dv.local else x for x in nodes[k].inputs))
        outs[i] = replace(dv, local=nv)
    return outs
