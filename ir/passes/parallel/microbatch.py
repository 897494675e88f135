"""Micro-batches as a graph pass: `split_microbatches(graph, batch, m)` runs the forward and
backward of a step once per micro-batch (the batch arguments cut along their first axis) and
sums what the update reads from them: gradient accumulation, in one graph.

Each copy is emitted through the sharding rules (`rules.py`) with the rows split over m "ranks"
that are the copies themselves, so every shape in it (reshapes, expands) is the micro-batch's.
A reduction over the rows is the micro-batch's own (its loss is its mean), each copy's backward
starts from d(loss)/m, and the gradients are summed: the step of the whole batch when the loss
is a mean over equal micro-batches (Megatron-LM's and PyTorch's convention). An op that mixes
the rows of micro-batches (batch norm) is refused, naming it.

Returns the graph and, per node, its micro-batch (-1: the update, after all of them), which the
pipeline pass (`pp.py`) schedules.
"""
from __future__ import annotations

from ...builder import GraphBuilder
from ...graph import Graph, Node, Value
from .builder import DValue, ParallelPlanError, ShardBuilder
from .spec import P, R, S

BODY = ("forward", "backward")


class MicroBatchBuilder(ShardBuilder):
    """Copy k of m: rows split like rank k of m, a partial result taken as this copy's own."""
    local_means = True

    def local(self, op, ins, attrs, specs, gtypes, origin=""):
        return super().local(op, ins, attrs, [R if s.kind == "P" else s for s in specs], gtypes, origin)

    def combine(self, v: Value, op: str) -> Value:
        return v

    def _convert(self, h: DValue, spec):
        if h.spec.kind == "S":
            raise ParallelPlanError(f"{self.at()}: mixes the rows of micro-batches ({list(h.type.shape)}, split along "
                                    f"axis {h.spec.dim} into {self.n}); it cannot run one micro-batch at a time")
        return super()._convert(h, spec)


def split_microbatches(graph: Graph, batch: tuple, m: int) -> tuple[Graph, tuple]:
    if m == 1:
        return graph, tuple(0 if n.phase in BODY else -1 for n in graph.nodes)
    batch_in = [v for v in graph.inputs if v.name in batch]
    for v in batch_in:
        if not v.shape or v.shape[0] % m:
            raise ParallelPlanError(f"batch argument {v.name} {list(v.shape)} does not split into {m} micro-batches "
                                    "along its first axis")
    seed = _seed(graph)
    out = GraphBuilder.continuing(graph)
    body = [n for n in graph.nodes if n.phase in BODY]
    tags: list[int] = []
    envs = []
    for k in range(m):
        b = MicroBatchBuilder(graph, tuple(range(m)), k, "microbatch", out)
        env = {v: b.wrap(v) for v in graph.inputs}
        env.update({v: b.to(b.wrap(v), S(0)) for v in batch_in})
        tags += [k] * (len(out.nodes) - len(tags))
        for n in body:
            b.node, out.phase = n, n.phase
            with out.scope(n, n.tag):
                if n is seed:
                    outs = b.emit("full", [], {**n.attrs, "value": n.attrs["value"] / m})
                else:
                    outs = b.emit(n.op, [env[v] for v in n.inputs], dict(n.attrs))
            env.update(zip(n.outputs, outs))
            tags += [k] * (len(out.nodes) - len(tags))
        envs.append(env)
    prod = graph.producers()
    reads = [v for n in graph.nodes if n.phase not in BODY for v in n.inputs] + list(graph.outputs)
    summed: dict[Value, Value] = {}
    for v in dict.fromkeys(reads):
        p = prod.get(v)
        if p is None or p.phase not in BODY:
            continue
        parts = [envs[k][v] for k in range(m)]
        if any(h.spec.kind == "S" for h in parts):
            raise ParallelPlanError(f"{v.name} {list(v.shape)}, read after the backward, is per row of the batch; "
                                    "micro-batches can only pass on sums (gradients, the loss)")
        out.phase = "backward"
        with out.scope(p, "microbatch(accumulate)"):
            total = parts[0].local
            for h in parts[1:]:
                total = out.add(total, h.local)
            if p.phase == "forward":      # the loss: the mean of the micro-batches' means
                total = out.mul(total, 1.0 / m)
        summed[v] = total
    tags += [m - 1] * (len(out.nodes) - len(tags))
    for n in graph.nodes:
        if n.phase not in BODY:
            out.add_node(n.with_(inputs=tuple(summed.get(v, v) for v in n.inputs)))
    tags += [-1] * (len(out.nodes) - len(tags))
    g = out.finish([summed.get(v, v) for v in graph.outputs], meta=graph.meta)
    return g, tuple(tags)


def _seed(graph: Graph) -> Node:
    """The d(loss) = 1 the backward starts from: a 0-d `full` of 1 the first backward node reads."""
    users = graph.users()
    for n in graph.nodes:
        if (n.op == "full" and n.out.shape == () and n.attrs["value"] == 1 and not n.tag
                and any(u.phase == "backward" for u in users.get(n.out, ()))):
            return n
    raise ParallelPlanError("micro-batches need a step that calls backward() on a scalar loss")
