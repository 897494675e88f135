"""Pipeline parallelism as a graph pass: `pipeline_parallel(graph, group, rank, batch, m, schedule)`
rewrites a single-device step into the program of one stage of the pp group.

The step's forward and backward are first cloned per micro-batch (`microbatch.py`: gradient
accumulation in one graph). Each node goes to a stage (`stages.py`: blocks cut at module
boundaries, balanced by cost); this stage keeps its own nodes, in the order of its schedule
(`schedule.py`, AFAB or 1F1B): segments F(k) and B(k), one per micro-batch. A value one stage
makes and another reads is sent (`send`) at the end of the segment that made it and received
(`recv`) at the start of the first segment that reads it. Both sides order their messages the
same way (by segment, then by the value's place in the graph), so each pair's FIFO matches.

The update then runs on every stage: each stage sends the others the accumulated gradients (and
the loss) it made, so every rank returns the single-device values and holds the whole model.
"""
from __future__ import annotations

from ...builder import GraphBuilder
from ...graph import Graph, Node, Value
from .builder import ParallelPlanError
from .microbatch import BODY, split_microbatches
from .pp_state import EVERY, place_update, readers
from .schedule import bubble_fraction, stage_order
from .stages import assign


def pipeline_parallel(graph: Graph, group: tuple, rank: int, batch: tuple, microbatches: int,
                      schedule: str = "1f1b", shard_state: bool = True) -> Graph:
    group, m = tuple(group), microbatches
    pp, me = len(group), group.index(rank)
    gm, mb = split_microbatches(graph, batch, m)
    where, unit_stage = assign(gm, pp)
    k_of = dict(zip(gm.nodes, mb))
    order = {v: i for i, v in enumerate(gm.values())}
    prod = gm.producers()
    b = GraphBuilder.continuing(gm)
    env: dict[Value, Value] = {}

    def value(v: Value) -> Value:
        if v in env:
            return env[v]
        p = prod.get(v)
        if p is None or p.phase not in BODY:
            return v
        if where[p] is not None:
            raise ParallelPlanError(f"pp={pp}: {v.name} of stage {where[p]} is read on stage {me} before it "
                                    f"arrives ({p.op} at {p.prov.where() if p.prov else '?'})")
        emit(p)          # free: every stage that needs it computes it
        return env[v]

    def emit(n: Node) -> None:
        b.phase = n.phase
        b.add_node(n.with_(inputs=tuple(value(v) for v in n.inputs)))
        env.update((o, o) for o in n.outputs)

    segments = {}
    for n in gm.nodes:
        if n.phase in BODY and where[n] is not None:
            segments.setdefault((where[n], "F" if n.phase == "forward" else "B", k_of[n]), []).append(n)

    def incoming(nodes: list[Node], stage: int) -> list[tuple[Value, int]]:
        seen, out = set(), []
        for n in nodes:
            for v in n.inputs:
                p = prod.get(v)
                if p is not None and p.phase in BODY and where[p] not in (None, stage) and v not in seen:
                    seen.add(v)
                    out.append((v, where[p]))
        return sorted(out, key=lambda x: order[x[0]])

    # who reads what: (producing stage, value) -> stages that receive it, in their schedules
    first_read: dict[tuple, tuple] = {}
    for s in range(pp):
        for pos, seg in enumerate(stage_order(schedule, s, pp, m)):
            for v, t in incoming(segments.get((s, *seg), []), s):
                first_read.setdefault((v, s), (pos, seg))
    plan = stage_order(schedule, me, pp, m)
    for kind, k in plan:
        nodes = segments.get((me, kind, k), [])
        with b.scope(None, f"pp({kind}{k})"):
            for v, s in incoming(nodes, me):
                if first_read[(v, me)] == (plan.index((kind, k)), (kind, k)) and v not in env:
                    b.phase = "forward" if kind == "F" else "backward"
                    env[v] = b.recv(shape=v.shape, dtype=v.dtype, device=v.type.device, peer=group[s],
                                    group=(group[s], rank))
        for n in nodes:
            emit(n)
        made = {o for n in nodes for o in n.outputs}
        with b.scope(None, f"pp({kind}{k})"):
            for t in range(pp):
                if t != me:
                    for v in sorted((v for (v, s) in first_read if s == t and v in made), key=order.get):
                        b.send(env[v], peer=group[t], group=(rank, group[t]))
    meta = dict(schedule=schedule, microbatches=m, stages=pp, stage=me, bubble=bubble_fraction(pp, m),
                units={s: [u for u, t in unit_stage.items() if t == s] for s in range(pp)})
    if shard_state and graph.meta.get("state_io"):
        outputs, owned = _update_on_owners(b, gm, where, env, value, emit, me, group)
        return b.finish(outputs, meta={**graph.meta, "pp": meta, "pp_owned": owned, "pp_owned_outputs": {
            j: k for k, j in graph.meta["state_io"] if k in owned}})
    _exchange(b, gm, where, env, value, me, group, rank, order)
    rest = [n for n in gm.nodes if n.phase not in BODY]
    for n in rest:
        emit(n)
    return b.finish([value(v) for v in gm.outputs], meta={**graph.meta, "pp": meta})


def _update_on_owners(b, gm, where, env, value, emit, me, group):
    """Each update node on the stage that owns its state (`pp_state.py`); what the step returns
    broadcast from the stage that made it, except the state an owner keeps: the others return an
    empty placeholder for it and take it as an empty input. Returns (outputs, {input: owner})."""
    written = {j: k for k, j in gm.meta["state_io"]}      # output index -> the state input it writes
    state = {v for v in gm.inputs if v.name in written.values()}
    place, mixed, owner = place_update(gm, where, state)
    read = readers(gm, where)
    kept = {v.name: s for v, s in owner.items() if isinstance(s, int) and read.get(v, set()) <= {s}}
    for i, v in enumerate(b.inputs):
        if v.name in kept and kept[v.name] != me:
            b.inputs[i] = Value(v.name, v.type.with_(shape=(0,)))
    prod = gm.producers()

    def stage_of(v):
        p = prod.get(v)
        if p is None:
            return owner.get(v, EVERY)
        return (EVERY if where[p] is None else where[p]) if p.phase in BODY else place[p]

    sent: dict = {}

    def everywhere(v, s):
        """v, made on stage s, on every stage (a broadcast from s)."""
        if v not in sent:
            t = v.type
            x = value(v) if s == me else b.full(shape=t.shape, value=0, dtype=t.dtype, device=t.device)
            sent[v] = b.broadcast(x, root=group[s], group=group)
        return sent[v]

    b.phase = "update"
    for n in gm.nodes:
        if n.phase in BODY:
            continue
        if n in mixed:
            with b.scope(n, "pp(update)"):
                ins = [everywhere(v, stage_of(v)) if isinstance(stage_of(v), int) else value(v) for v in n.inputs]
            b.add_node(n.with_(inputs=tuple(ins)))
            env.update((o, o) for o in n.outputs)
        elif place[n] in (EVERY, me):
            emit(n)
    outputs = []
    with b.scope(None, "pp(output)"):
        for j, v in enumerate(gm.outputs):
            s = stage_of(v)
            if not isinstance(s, int):
                outputs.append(value(v))
            elif written.get(j) in kept:
                outputs.append(value(v) if s == me else b.full(shape=(0,), value=0, dtype=v.dtype, device=v.type.device))
            else:
                outputs.append(everywhere(v, s))
    return outputs, kept


def _exchange(b, gm, where, env, value, me, group, rank, order) -> None:
    """What the update reads from the forward/backward (accumulated gradients, the loss), from the
    stage that made it to every other stage."""
    prod = gm.producers()
    wanted = []
    for v in [*(x for n in gm.nodes if n.phase not in BODY for x in n.inputs), *gm.outputs]:
        p = prod.get(v)
        if p is not None and p.phase in BODY and where[p] is not None and v not in wanted:
            wanted.append(v)
    wanted.sort(key=order.get)
    b.phase = "update"
    with b.scope(None, "pp(exchange)"):
        for t in range(len(group)):
            if t != me:
                for v in wanted:
                    if where[prod[v]] == me:
                        b.send(value(v), peer=group[t], group=(rank, group[t]))
        for v in wanted:
            s = where[prod[v]]
            if s != me:
                env[v] = b.recv(shape=v.shape, dtype=v.dtype, device=v.type.device, peer=group[s],
                                group=(group[s], rank))
