"""The order fusion keeps of its groups: a topological order of the group DAG, kept valid through
merges, which bounds the search for the cycle a merge would close (a path between two groups runs
only through the groups ordered between them). With it a legality check looks at the few groups
between a pair, not at everything downstream of it: linear rather than quadratic over a step of
thousands of groups. `state_last` adds the edges that order a state's new value after the readers
of its old one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import networkx as nx

if TYPE_CHECKING:
    from ..graph import Value
    from .fusion import Fuser


class GroupOrder:
    def __init__(self, dag: nx.DiGraph, order: list[int]):
        """`order`: the DAG's groups, every edge going forward (the graph's node order does)."""
        self.dag = dag
        self.order: list = list(order)         # group ids, None where a merged group was
        self.pos = {g: k for k, g in enumerate(self.order)}
        self._below: tuple | None = None       # (lo, hi, groups reachable from lo before hi) of the last check

    def cycle_via(self, a: int, b: int):
        """A group on a path between a and b other than an edge a -> b or b -> a (fusing a and b
        would close a cycle), or None. Only the earlier of the two can reach the other, and only
        through groups ordered between them, so the search stops there."""
        lo, hi = (a, b) if self.pos[a] < self.pos[b] else (b, a)
        end, pos, succ = self.pos[hi], self.pos, self.dag._succ
        seen, stack = set(), [s for s in succ[lo] if s != hi]
        while stack:
            g = stack.pop()
            if g in seen or pos[g] > end:
                continue
            if hi in succ[g]:
                return g
            seen.add(g)
            stack.extend(s for s in succ[g] if s != hi)
        self._below = (lo, hi, seen)      # NOTE: exactly the groups between lo and hi that lo reaches
        return None

    def merge(self, a: int, b: int) -> None:
        """b is about to merge into a (no path joins them but an edge): between the two, the groups
        reachable from the earlier one move after the merged group, the rest before it."""
        lo, hi = (a, b) if self.pos[a] < self.pos[b] else (b, a)
        if self._below is None or self._below[:2] != (lo, hi):
            if self.cycle_via(a, b) is not None:
                raise AssertionError(f"merging groups {a} and {b} would make a cycle")
        below = self._below[2]
        i, j = self.pos[lo], self.pos[hi]
        between = [g for g in self.order[i + 1:j] if g is not None]
        seg = [g for g in between if g not in below] + [a] + [g for g in between if g in below]
        seg += [None] * (j - i + 1 - len(seg))
        self.order[i:j + 1] = seg
        for k, g in enumerate(seg, i):
            if g is not None:
                self.pos[g] = k
        del self.pos[b]
        self._below = None


def state_last(f: Fuser) -> bool:
    """Edges in the fuser's DAG from the groups reading a state's old value to the group making its
    new one (`graph.meta["updates"]`: a parameter, an optimizer moment, a step count), where that
    makes no cycle: only the old value's last reader may write the new one over it in place, so a
    step count's increment must not be packed into a launch before the update that reads the
    count. Whether any edge went against the node order."""
    back, pairs = False, f.graph.meta.get("updates", {})
    olds = {f.graph.inputs[j] for j in pairs.values() if j < len(f.graph.inputs)}
    readers: dict[Value, set] = {}     # NOTE: a group recomputing a scalar from the state reads it too
    for g in f.groups if olds else ():
        for v in olds.intersection(f.inputs_of(g)):
            readers.setdefault(v, set()).add(g)
    for k, j in pairs.items():
        if k >= len(f.graph.outputs) or j >= len(f.graph.inputs):
            continue
        w = f.group_of.get(f.prod.get(f.graph.outputs[k]))
        if w is None:
            continue
        for r in readers.get(f.graph.inputs[j], set()) - {w}:
            if not nx.has_path(f.dag, w, r):
                f.dag.add_edge(r, w)
                back |= r > w
    return back

