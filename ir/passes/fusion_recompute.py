"""Which elementwise nodes fusion recomputes in every kernel that reads them instead of giving
them a kernel: small operands read broadcast (a bias's autocast, a norm's weight math) and short
widening chains several kernels read (a bf16 gradient cast to fp32 and scaled by a norm's
weight: each reader loads 2 bytes an element instead of one kernel writing 4 for all to load).
`Recompute` is the part of `fusion.Fuser` that decides it; it uses the fuser's `nodes`, `cls`,
`prod`, `users`, `outputs` and `walk`.
"""
from __future__ import annotations

from .fusion_plan import INDEXED, RANDOM

SMALL, BROADCAST = 1 << 16, 4   # elementwise results this small, read broadcast 4x wider, are recomputed
WIDENING, WIDENING_OPS = ("cast", "mul", "add", "sub", "neg"), 3   # recomputed chains: these ops, this long


class Recompute:
    def mark_recomputed(self) -> None:
        """Class "scalar" (recomputed where read) for the broadcast operands and widening chains."""
        for i in reversed(range(len(self.nodes))):   # consumers first: a chain of broadcasts is recomputed whole
            if self.cls[i] == "pointwise" and self.broadcast_only(i):
                self.cls[i] = "scalar"
        self._widening: dict[int, tuple[int, int]] = {}
        for i in range(len(self.nodes)):             # producers first: a chain is judged from its start
            if self.cls[i] == "pointwise" and self.widening(i):
                self.cls[i] = "scalar"

    def broadcast_only(self, i: int) -> bool:
        """A small elementwise node (a bias cast, a norm's weight math) whose every reader broadcasts it
        over at least BROADCAST times more elements: cheaper to recompute in each reader than to launch."""
        n = self.nodes[i]
        if n.op in INDEXED + RANDOM or len(n.outputs) != 1 or n.out in self.outputs or n.out.type.numel > SMALL:
            return False
        stack, seen = [n.out], set()
        while stack:
            v = stack.pop()
            for u in self.users.get(v, ()):
                if u in seen:
                    continue
                seen.add(u)
                if self.cls[u] == "view":
                    if self.nodes[u].out in self.outputs:
                        return False
                    stack.append(self.nodes[u].out)
                elif self.cls[u] in ("extern", "const") or (self.cls[u] != "scalar" and max(
                        o.type.numel for o in self.nodes[u].outputs) < BROADCAST * n.out.type.numel):
                    return False
        return True

    def widening(self, i: int) -> bool:
        """A short elementwise chain (`WIDENING` ops) whose result is wider than what it loads and
        that more than one node reads: cheaper for each reader to recompute than to store once."""
        n = self.nodes[i]
        if n.op not in WIDENING or len(n.outputs) != 1 or n.out in self.outputs:
            return False
        loads, ops = 0, 1
        for v in n.inputs:
            j, u = self.prod.get(v), v
            while j is not None and self.cls[j] == "view":
                u = self.nodes[j].inputs[0]
                j = self.prod.get(u)
            if j is not None and self.cls[j] in ("const", "scalar") and j not in self._widening:
                continue
            if u.type.numel * BROADCAST <= n.out.type.numel:   # a norm's weight, read broadcast
                continue
            more_loads, more_ops = self._widening.get(j, (u.type.dtype.itemsize, 0))
            loads, ops = loads + more_loads, ops + more_ops
        readers = sum(1 for u in self.walk(n.out, lambda k: self.cls[k] == "view")
                      for k in self.users.get(u, ()) if self.cls[k] != "view")
        if ops > WIDENING_OPS or loads >= n.out.type.dtype.itemsize or readers < 2:
            return False
        self._widening[i] = (loads, ops)
        return True

    def scalars_needed_as_buffers(self) -> set[int]:
        """0-d math that a graph output or an extern kernel reads (through views): it needs a kernel."""
        out, stack, seen = set(), list(self.graph.outputs), set()
        for i, n in enumerate(self.nodes):
            if self.cls[i] == "extern":
                stack.extend(n.inputs)
        while stack:
            v = stack.pop()
            i = self.prod.get(v)
            if i is None or i in seen:
                continue
            seen.add(i)
            if self.cls[i] in ("view", "const"):
                stack.extend(self.nodes[i].inputs)
            elif self.cls[i] == "scalar":
                out.add(i)
        return out
