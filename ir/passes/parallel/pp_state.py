"""Pipeline stages that hold only their own state: where each node of a step's update runs, so
that a stage keeps (and updates) only the parameters and optimizer state its blocks use.

The update's nodes are grouped with the state they read (union-find over values): a group that
meets a value one stage made (a gradient accumulated on stage s) runs on stage s alone, and the
state inputs in it are owned by s; a group that meets no staged value (a step counter, the
learning rate) runs on every stage. A node whose inputs come from several stages (the total norm
of `clip_grad_norm_` over every stage's gradients) runs on every stage, each staged input
broadcast from its stage first. A state input that a stage other than its owner reads in the
forward or backward (a weight tied across stages) stays whole on every stage: its owner updates
it and broadcasts the result.
"""
from __future__ import annotations

from ...graph import Graph, Node, Value
from .microbatch import BODY

EVERY = "every"


class _Classes:
    """Union-find over values; each class has a stage: an int, EVERY, or None (not known yet)."""

    def __init__(self):
        self.parent: dict[Value, Value] = {}
        self.stage: dict[Value, object] = {}

    def find(self, v: Value) -> Value:
        root = v
        while self.parent.get(root, root) is not root:
            root = self.parent[root]
        self.parent[v] = root
        return root

    def new(self, v: Value, stage=None) -> None:
        self.parent[v], self.stage[v] = v, stage

    def union(self, vs: list, stage) -> None:
        roots = list(dict.fromkeys(self.find(v) for v in vs))
        for r in roots[1:]:
            self.parent[r] = roots[0]
        self.stage[roots[0]] = stage

    def of(self, v: Value):
        return self.stage[self.find(v)]


def place_update(gm: Graph, where: dict, state: set) -> tuple[dict, set, dict]:
    """(node -> stage or EVERY, the mixed nodes, state input -> owning stage or EVERY) for the
    update nodes of `gm` (`where`: the stage of each forward/backward node, None where free)."""
    prod = gm.producers()
    cls = _Classes()
    for v in gm.inputs:
        if v in state:
            cls.new(v)
    mixed: set[Node] = set()

    def loc(v: Value):
        """int or EVERY for a fixed place; the class root for state and the update's values."""
        p = prod.get(v)
        if p is not None and p.phase in BODY:
            return EVERY if where[p] is None else where[p]
        if v in cls.parent:
            s = cls.of(v)
            return cls.find(v) if s is None else s
        return EVERY

    update = [n for n in gm.nodes if n.phase not in BODY]
    for n in update:
        places = [loc(v) for v in n.inputs]
        known = {p for p in places if isinstance(p, int)}
        if len(known) > 1:
            mixed.add(n)
            for o in n.outputs:
                cls.new(o, EVERY)
            continue
        roots = [p for p in places if isinstance(p, Value)]
        stage = known.pop() if known else (None if roots else EVERY)
        for o in n.outputs:      # NOTE: a constant or a cast of the lr joins no group: every stage makes it
            cls.new(o, stage)
        if roots:
            cls.union(roots + list(n.outputs), stage)
    place = {}
    for n in update:
        s = cls.of(n.outputs[0]) if n.outputs else EVERY
        place[n] = EVERY if s is None else s
    owner = {v: (EVERY if cls.of(v) is None else cls.of(v)) for v in gm.inputs if v in state}
    return place, mixed, owner


def readers(gm: Graph, where: dict) -> dict[Value, set]:
    """The stages whose forward or backward read each graph input (a free node: the stages of the
    staged nodes that read what it makes)."""
    users = gm.users()
    need: dict[Node, set] = {}
    for n in reversed(gm.nodes):
        if n.phase not in BODY:
            continue
        if where[n] is not None:
            need[n] = {where[n]}
        else:
            need[n] = set().union(*(need.get(u, set()) for o in n.outputs for u in users.get(o, ())))
    out: dict[Value, set] = {}
    inputs = set(gm.inputs)
    for n in gm.nodes:
        if n.phase in BODY:
            for v in n.inputs:
                if v in inputs:
                    out.setdefault(v, set()).update(need[n])
    return out
