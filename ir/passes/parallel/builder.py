"""`ShardBuilder`: a `Builder` whose handles are sharded values. A rule, a decomposition or the
pass itself calls `b.matmul(x, w)` with global shapes and attributes, as on one device; the
builder asks the op's sharding rule (`rules.py`) how each input must lie, moves data where it
must (an `all_reduce`, an `all_gather`, or a local slice, which moves nothing), and emits the
op on every rank's local blocks into a new graph.

A handle (`DValue`) is the local value, its `Spec` and the global type. Conversions are cached per
handle, so a replicated weight is sliced once however many ops read it, and a partial value
summed once however many nonlinear ops read it. Every rank makes the same calls in the same
order, so the collectives of the ranks pair up.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...builder import Builder, GraphBuilder
from ...errors import IRError
from ...graph import Graph, Node, Value
from ...ops.registry import get
from ...types import TensorType
from .spec import P, R, S, Spec


class ParallelPlanError(IRError):
    """A parallel plan that cannot apply to this graph (sizes that do not split, ...)."""


@dataclass(frozen=True, eq=False)
class DValue:
    local: Value
    spec: Spec
    type: TensorType          # the global type
    origin: str = ""          # the module whose plan sharded it (for errors)


class ShardBuilder(Builder):
    """Emits a rank's local program of a graph whose values are sharded over `group`."""

    local_means = False     # micro-batches (microbatch.py): a reduction over rows is this part's own
    zigzag = False          # context parallel (cp.py): rank r holds blocks r and 2n-1-r of 2n

    def __init__(self, graph: Graph, group: tuple, rank: int, axis: str = "tp", out: GraphBuilder | None = None):
        self.out = out if out is not None else GraphBuilder.continuing(graph)
        self.group, self.n, self.r, self.axis = tuple(group), len(group), tuple(group).index(rank), axis
        self._cache: dict[tuple, DValue] = {}
        self.node: Node | None = None      # the node being rewritten (for errors and provenance)

    # -- Builder protocol ---------------------------------------------------------------------
    def type_of(self, h) -> TensorType:
        return h.type

    def emit(self, op, inputs, attrs):
        from .rules import apply_rule
        opdef = get(op)
        attrs = opdef.normalize_attrs(attrs)
        gtypes = opdef.infer_types([h.type for h in inputs], attrs)
        return tuple(apply_rule(self, op, list(inputs), attrs, gtypes))

    # -- local emission -----------------------------------------------------------------------
    def local(self, op: str, ins: list[DValue], attrs: dict, specs: list[Spec], gtypes: list[TensorType],
              origin: str = "") -> list[DValue]:
        """Emit `op` on the local blocks `ins` (already converted) with local `attrs`."""
        outs = self.out.emit(op, [h.local for h in ins], attrs)
        res = []
        for v, spec, gt in zip(outs, specs, gtypes):
            assert spec.kind != "S" or 0 <= spec.dim < len(gt.shape), (op, spec, gt, self.node)
            want = spec.local(gt.shape, self.n)
            if v.type.shape != want:
                raise ParallelPlanError(f"{self.at()}: {op} made a local {list(v.type.shape)} where {spec} of "
                                        f"{list(gt.shape)} over {self.n} ranks is {list(want)} (a sharding rule is wrong)")
            res.append(DValue(v, spec, gt, origin or next((h.origin for h in ins if h.origin), "")))
        return res

    def combine(self, v: Value, op: str) -> Value:
        """The `op` ("max") of the ranks' local results."""
        return self.out.all_reduce(v, op=op, group=self.group)

    def wrap(self, v: Value, spec: Spec = R, origin: str = "") -> DValue:
        return DValue(v, spec, v.type if spec.kind != "S" else v.type.with_(
            shape=tuple(s * self.n if i == spec.dim else s for i, s in enumerate(v.type.shape))), origin)

    def at(self) -> str:
        n = self.node
        if n is None or n.prov is None:
            return f"{self.axis}={self.n}"
        mod = f" in {n.prov.module}" if n.prov.module else ""
        return f"{self.axis}={self.n}: {n.op}{mod} ({n.prov.where()})"

    # -- moving data ----------------------------------------------------------------------------
    def to(self, h: DValue, spec: Spec) -> DValue:
        """`h` laid out as `spec` on every rank."""
        if h.spec == spec:
            return h
        key = (h, spec)         # by handle: two handles may share a local value yet differ (rules.py)
        if key not in self._cache:
            self._cache[key] = self._convert(h, spec)
        return self._cache[key]

    def summed(self, h: DValue) -> DValue:
        """`h` replicated if it was partial and has been summed before, else `h`."""
        return self._cache.get((h, R), h) if h.spec.kind == "P" else h

    def _convert(self, h: DValue, spec: Spec) -> DValue:
        b, v = self.out, h.local
        if spec.kind == "P":
            raise ParallelPlanError(f"{self.at()}: cannot make a partial value from {h.spec}")
        if h.spec.kind == "P":
            if spec.kind == "S" and spec.groups == 1 and spec.fits(h.type.shape, self.n):
                out = b.reduce_scatter(v, axis=spec.dim, group=self.group)
                return DValue(out, spec, h.type, h.origin)
            return self.to(DValue(b.all_reduce(v, op="sum", group=self.group), R, h.type, h.origin), spec)
        if h.spec.kind == "S":
            full = DValue(self._gather(v, h.spec), R, h.type, h.origin)
            return self.to(full, spec)
        if not spec.fits(h.type.shape, self.n):
            raise ParallelPlanError(f"{self.at()}: {list(h.type.shape)} does not split as {spec} over {self.n} ranks")
        return DValue(self._slice(v, spec), spec, h.type, h.origin)

    def _chunked(self, v: Value, spec: Spec):
        """v reshaped so the sharded dim is (groups, rest): (value, axis of rest)."""
        d, g = spec.dim, spec.groups
        shape = v.type.shape
        return self.out.reshape(v, shape=shape[:d] + (g, shape[d] // g) + shape[d + 1:]), d + 1

    def _blocks(self, v: Value, spec: Spec, per: int):
        """v with its split dim viewed as (groups, per, rest): (value, axis of `per`)."""
        d, g = spec.dim, spec.groups
        shape = v.type.shape
        return self.out.reshape(v, shape=shape[:d] + (g, per, shape[d] // (g * per)) + shape[d + 1:]), d + 1

    def _pick(self, x: Value, axis: int, idx: list[int]) -> Value:
        shape = x.type.shape
        parts = [self.out.slice(x, starts=tuple(i if a == axis else 0 for a in range(len(shape))),
                                stops=tuple(i + 1 if a == axis else s for a, s in enumerate(shape)),
                                steps=(1,) * len(shape)) for i in idx]
        return parts[0] if len(parts) == 1 else self.out.concat(*parts, axis=axis)

    def _slice(self, v: Value, spec: Spec) -> Value:
        if self.zigzag:      # blocks r and 2n-1-r of each group (balanced causal attention)
            x, axis = self._blocks(v, spec, 2 * self.n)
            out = self._pick(x, axis, [self.r, 2 * self.n - 1 - self.r])
            return self.out.reshape(out, shape=spec.local(v.type.shape, self.n))
        x, axis = (v, spec.dim) if spec.groups == 1 else self._chunked(v, spec)
        shape = x.type.shape
        k = shape[axis] // self.n
        starts = tuple(self.r * k if i == axis else 0 for i in range(len(shape)))
        stops = tuple((self.r + 1) * k if i == axis else s for i, s in enumerate(shape))
        out = self.out.slice(x, starts=starts, stops=stops, steps=(1,) * len(shape))
        return out if spec.groups == 1 else self.out.reshape(out, shape=spec.local(v.type.shape, self.n))

    def _gather(self, v: Value, spec: Spec) -> Value:
        if self.zigzag:      # rank i holds blocks (i, 2n-1-i): gather, then put the blocks in order
            n = self.n
            x, axis = self._blocks(v, spec, 2)
            x = self.out.all_gather(x, axis=axis, group=self.group)
            x = self._pick(x, axis, [2 * j if j < n else 2 * (2 * n - 1 - j) + 1 for j in range(2 * n)])
            shape = v.type.shape
            return self.out.reshape(x, shape=shape[:spec.dim] + (shape[spec.dim] * n,) + shape[spec.dim + 1:])
        x, axis = (v, spec.dim) if spec.groups == 1 else self._chunked(v, spec)
        out = self.out.all_gather(x, axis=axis, group=self.group)
        if spec.groups == 1:
            return out
        shape = v.type.shape
        return self.out.reshape(out, shape=shape[:spec.dim] + (shape[spec.dim] * self.n,) + shape[spec.dim + 1:])

    def rank_offset(self, size: int) -> int:
        return self.r * (size // self.n)


__all__ = ["DValue", "ShardBuilder", "ParallelPlanError", "P", "R", "S", "Spec"]
