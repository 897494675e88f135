"""What one compiled signature of a step holds and does per call: its program, the guards that say
whether a later call may reuse it, where each graph input comes from, and the write-backs of the
state it updates (`Entry.run`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from . import pytree
from .bounds import check_inputs
from .compiled_grad import CompiledBackward
from .dispatch import grad_enabled
from .errors import Donated
from .ir.passes import PassManager
from .runtime.shards import Chain, Layout, Owned, Sharded
from .tensor import Tensor
from .trace import ArgSource, GradSource, StateSource, Trace


@dataclass
class Entry:
    key: tuple
    title: str
    sources: list          # per graph input: an ArgSource, StateSource or GradSource
    plan: list             # WriteBacks of the outputs after the user's
    guards: list
    n_user: int
    out_spec: object
    out_leaves: list
    out_types: list
    stages: PassManager
    program: object
    compile_ms: float
    donated: dict = field(default_factory=dict)    # leaf index -> argument name, for donate=
    backward: CompiledBackward | None = None       # when the outputs are differentiable
    on_backward_call: list = field(default_factory=list)   # e.g. DDP: average the gradients after backward()
    calls: int = field(default=0)
    index_checks: list = field(default_factory=list)   # inputs used as indices (bounds.checks_of)
    shards: tuple = ({}, {})     # ({input index: Layout}, {output index: Layout}): state held as blocks

    def guards_hold(self, leaves) -> bool:
        return all(check(leaves) for check, _ in self.guards)

    def failed_guard(self, leaves) -> str:
        return next((why for check, why in self.guards if not check(leaves)), "")

    def run(self, leaves):
        ins = [src.read(leaves)._data for src in self.sources]
        for j, layout in self.shards[0].items():
            ins[j] = _block(ins[j], layout)
        for j, a in enumerate(ins):
            if type(a) is Sharded and j not in self.shards[0]:    # held in blocks by another step's plan
                ins[j] = a.full()
        check_inputs(self.index_checks, ins)
        if self.donated:
            for j, src in enumerate(self.sources):
                if isinstance(src, ArgSource) and src.index in self.donated:
                    ins[j] = _writable(ins[j])
        outs = self.program(*ins)     # a Donated buffer among ins raises DonatedError at its first use
        self.calls += 1
        for i, name in self.donated.items():
            leaves[i]._data = Donated(self.title, name)
        user = [Tensor._from_array(o, t) for o, t in zip(outs[:self.n_user], self.out_types)]
        if self.backward is not None and grad_enabled():
            bw = self.backward
            sources = [self.sources[j].read(leaves) for j in bw.diff_in]
            bw.attach(sources, [user[i] for i in bw.diff_out], ins)
            for fn in self.on_backward_call:
                fn()
        rest = iter(enumerate(zip(outs[self.n_user:], self.out_types[self.n_user:]), self.n_user))
        for wb in self.plan:
            obj = wb.target(leaves)
            if wb.kind == "grad_none":
                obj._grad = None
                continue
            j, (arr, typ) = next(rest)
            if wb.kind == "data":
                layout = self.shards[1].get(j)
                obj._data = arr if layout is None else Sharded(arr, layout)
            elif obj._grad is None:
                obj._grad = Tensor._from_array(arr, typ)
            else:
                obj._grad._data = arr
        it = iter(user)
        return pytree.unflatten(self.out_spec, [next(it) if isinstance(x, Tensor) else x for x in self.out_leaves])


def _block(data, layout: Layout):
    """This rank's block of a sharded input: as held since the last step, or cut from the whole
    array (the first call, or after `load_state_dict`)."""
    if type(data) is Sharded:
        if data.layout.same(layout):
            return data.local
        data = data.full()
    return layout.block(data)


def state_io(graph, sources: list, plan: list, n_user: int) -> tuple:
    """((input name, output index), ...): the state a step reads and writes back in place
    (parameters, optimizer state), the pairs a parallel plan may keep sharded between steps."""
    by_target = {}
    for j, (v, src) in enumerate(zip(graph.inputs, sources)):
        if isinstance(src, StateSource):
            by_target.setdefault(id(src.tensor), v.name)
    out, j = [], n_user
    for wb in plan:
        if wb.kind == "grad_none":
            continue
        if wb.kind == "data" and not isinstance(wb.ref, int) and id(wb.ref) in by_target:
            out.append((by_target[id(wb.ref)], j))
        j += 1
    return tuple(out)


def shard_layouts(stages, mesh, comm) -> tuple:
    """The layout of each input and output the tensor- and pipeline-parallel passes left sharded
    (their meta): ({input index: layout}, {output index: layout})."""
    names = [s.name for s in stages.stages]
    last = stages[names[-1]]
    inputs = [v.name for v in last.inputs]
    layouts: dict = {}
    outs: dict = {}
    if "tp" in names and stages["tp"].meta.get("tp_shards"):
        meta, group = stages["tp"].meta, mesh.group("tp", comm.rank)
        for k, (dim, groups) in meta["tp_shards"].items():
            layouts[k] = Layout(dim, groups, group, group.index(comm.rank), comm)
        outs.update({j: k for j, k in meta.get("tp_shard_outputs", {}).items()})
    if "pp" in names and stages["pp"].meta.get("pp_owned"):
        meta, group = stages["pp"].meta, mesh.group("pp", comm.rank)
        before = {v.name: v.type for v in stages[names[names.index("pp") - 1]].inputs}
        for k, stage in meta["pp_owned"].items():
            t = before[k]
            owned = Owned(group[stage], group, comm.rank, t.shape, t.dtype.np, comm)
            layouts[k] = owned if k not in layouts else Chain(layouts[k], owned)
        outs.update({j: k for j, k in meta.get("pp_owned_outputs", {}).items()})
    return ({inputs.index(k): lay for k, lay in layouts.items()}, {j: layouts[k] for j, k in outs.items()})


def _writable(a):
    """A donated buffer the step may write into: itself, or a copy when it is a read-only or
    overlapping view (a broadcast), which no kernel may write, or any view of another buffer
    (`base[0:1]`): donating the view gives up only the view, never its base."""
    arr = getattr(a, "array", a)      # a TypedArray's buffer
    if arr.flags.c_contiguous and getattr(arr.flags, "writeable", True) and arr.base is None:
        return a
    return type(a)(arr.copy(), a.dtype) if arr is not a else arr.copy()


def guards_of(tr: Trace) -> list:
    """Checks that must hold for a later call to reuse this trace (state it read, by shape and kind)."""
    def find(ref, leaves):
        return leaves[ref] if isinstance(ref, int) else ref

    guards = []
    for src in tr.sources:
        if isinstance(src, StateSource):
            obj = src.tensor
            typ, rg = obj._type, obj.requires_grad
            guards.append((lambda lv, o=obj, t=typ, r=rg: o._type == t and o.requires_grad == r,
                           f"{obj._name or 'a captured tensor'} changed type or requires_grad"))
        elif isinstance(src, GradSource):
            obj = src.param
            typ = obj._grad._type
            guards.append((lambda lv, o=obj, t=typ: o._grad is not None and o._grad._type == t,
                           f"{obj._name or 'a parameter'}.grad changed"))
    for p, was_none in tr.grad_seen.values():
        guards.append((lambda lv, r=tr.ref(p), w=was_none: (find(r, lv)._grad is None) == w,
                       f"{p._name or 'a parameter'}.grad is {'now set' if was_none else 'now None'}"))
    return guards + [(lambda lv, c=check: c(), why) for check, why in tr.extra_guards]
