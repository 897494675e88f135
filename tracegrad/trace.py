"""Recording a step into an IR graph.

While a `Trace` is active, `apply` records ops instead of running them. Tensors from outside the
step (parameters, buffers, optimizer state, RNG state, constants) are lifted to graph inputs the
first time the step reads them; in-place updates of such tensors and assignments to `.grad`
become extra graph outputs, written back into the same tensors after each run
(functionalization). Nothing outside the step is changed by tracing itself.
"""
from __future__ import annotations

import contextlib
import keyword
import re
import threading
from dataclasses import dataclass

from .errors import TracegradError
from .ir.builder import GraphBuilder
from .ir.graph import Graph, Value
from . import provenance

_state = threading.local()
RESERVED = {"np", "ops", "comm", "erf", "sigmoid", "iota", "index_add", "scatter_add", "rand_uniform",
            "rand_normal", "bfloat16", "inf", "nan", "tl", "triton"}


def _variable_name(t) -> str:
    """The user's name for a captured tensor (`w` in `x @ w`), found in the calling frame."""
    f = provenance.user_frame(2)
    if f is None:
        return ""
    for scope in (f.f_locals, f.f_globals):
        for name, obj in scope.items():
            if obj is t and not name.startswith("_"):
                return name
    return ""


# -- where a graph input comes from, and where a graph output goes ----------------------------------
@dataclass(frozen=True)
class ArgSource:
    """The step's tensor argument at position `index` (among the flattened arguments)."""
    index: int

    def read(self, leaves: list):
        return leaves[self.index]


@dataclass(frozen=True, eq=False)
class StateSource:
    """A tensor from outside the step (a parameter, buffer, optimizer state, constant)."""
    tensor: object

    def read(self, leaves: list):
        return self.tensor


@dataclass(frozen=True, eq=False)
class GradSource:
    """The `.grad` of a parameter, as it is when the step is called."""
    param: object

    def read(self, leaves: list):
        return self.param._grad


@dataclass(frozen=True, eq=False)
class WriteBack:
    """A graph output written back after each call: into a tensor's data (`kind="data"`), into a
    parameter's `.grad` ("grad"), or `.grad` set to None ("grad_none", which has no output).
    `ref` is the argument position of the target, or the target tensor itself."""
    kind: str
    ref: object

    def target(self, leaves: list):
        return leaves[self.ref] if isinstance(self.ref, int) else self.ref


Source = ArgSource | StateSource | GradSource


def current() -> "Trace | None":
    return getattr(_state, "trace", None)


@contextlib.contextmanager
def suspended():
    """Run eagerly for a moment inside a trace (e.g. to create optimizer state once)."""
    saved = current()
    _state.trace = None
    try:
        yield
    finally:
        _state.trace = saved


class Trace:
    def __init__(self, name: str):
        self.b = GraphBuilder(name)
        self.sources: list[Source] = []         # per graph input: where a call finds it
        self.bindings: dict[int, Value] = {}    # id(outside tensor) -> its current value in the step
        self.keep: list = []                    # outside tensors we refer to by id
        self.mutated: dict[int, object] = {}    # id -> outside tensor updated in place
        self.grad_log: dict[int, tuple] = {}    # id(param) -> (param, .grad before the step)
        self.grad_owner: dict[int, object] = {} # id(grad tensor) -> param whose .grad it is
        self.grad_seen: dict[int, tuple] = {}   # id(param) -> (param, .grad was None when first seen)
        self.restore: list[tuple] = []          # (obj, attr, old value) to put back at the end
        self.arg_index: dict[int, int] = {}     # id(argument tensor) -> its position among the leaves
        self.extra_guards: list[tuple] = []     # (check() -> bool, why) on Python state the step read
        self.state_grads: dict[int, tuple] = {} # id(param) -> (param, the value backward() gave its .grad)
        self.parallel: dict[str, tuple] = {}    # plans modules register while tracing (DDP: "dp")
        self.on_backward_call: list = []        # run at each call whose outputs the caller differentiates
        self.phase = "forward"
        self._prov = None
        self._tag = ""
        self._names: set[str] = set()

    # -- entering / leaving -----------------------------------------------------------------
    def __enter__(self):
        if current() is not None:
            raise TracegradError("a compiled step called another compiled step while tracing; "
                                 "call the inner function undecorated")
        _state.trace = self
        return self

    def __exit__(self, *exc):
        _state.trace = None
        for obj, attr, old in reversed(self.restore):
            setattr(obj, attr, old)
        for p, old in self.grad_log.values():
            p._grad = old

    def fresh_name(self, hint: str) -> str:
        name = re.sub(r"\W", "_", hint or "c").strip("_") or "c"
        if name[0].isdigit() or keyword.iskeyword(name) or name in RESERVED or re.fullmatch(r"t\d+", name):
            name = "_" + name if name[0].isdigit() else name + "_"
        base, k = name, 1
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    # -- values -----------------------------------------------------------------------------
    def add_input(self, tensor, name: str, source: Source) -> Value:
        v = self.b.input(self.fresh_name(name), tensor._type)
        self.sources.append(source)
        return v

    def bind_arg(self, t, name: str, index: int) -> None:
        """An argument tensor stands for itself in the step: reads give the input, updates write back."""
        if id(t) in self.bindings:
            return
        self.bindings[id(t)] = self.add_input(t, name, ArgSource(index))
        self.arg_index[id(t)] = index
        self.keep.append(t)

    def _first_input(self, t) -> Value | None:
        for v, src in zip(self.b.inputs, self.sources):
            if (isinstance(src, StateSource) and src.tensor is t) or src == ArgSource(self.arg_index.get(id(t))):
                return v
        return None

    def ref(self, t):
        """How a later call finds tensor t: its argument position, or the tensor itself (state)."""
        return self.arg_index.get(id(t), t)

    def value_of(self, t) -> Value:
        if t._base is not None:
            return self.value_of(t._base)
        if t._trace is self:
            return t._data
        if isinstance(t._data, Value):
            raise TracegradError("a tensor from another compiled step (or a finished trace) was used here; "
                                 f"tensors computed inside a step exist only inside it\n  at {provenance.where()}")
        v = self.bindings.get(id(t))
        if v is None:
            owner = self.grad_owner.get(id(t))
            source = GradSource(owner) if owner is not None else StateSource(t)
            hint = t._name or _variable_name(t)
            if owner is not None:
                mine = self.bindings.get(id(owner))
                hint = ((mine.name if mine is not None else owner._name) or "param") + "_grad"
            v = self.add_input(t, hint or "c", source)
            self.bindings[id(t)] = v
            self.keep.append(t)
        return v

    def assign(self, t, new) -> None:
        """t <- new, in place: outside tensors get their new value at the end of the step."""
        v = self.value_of(new)
        if t._trace is self:
            t._data = v
        else:
            self.bindings[id(t)] = v
            self.mutated[id(t)] = t
            self.keep.append(t)

    def set_grad(self, p, g) -> None:
        self.grad_seen.setdefault(id(p), (p, p._grad is None))
        if id(p) not in self.grad_log:
            self.grad_log[id(p)] = (p, p._grad)
        p._grad = g

    def note_grad(self, p, g) -> None:
        if p._trace is self:
            return
        self.grad_seen.setdefault(id(p), (p, p._grad is None))
        if g is not None and g._trace is not self:
            self.grad_owner[id(g)] = p

    def mark_state_grad(self, p) -> None:
        """`backward()` just set the .grad of `p`, a tensor from outside the step: a data-parallel pass
        averages that value over the ranks (`ir/passes/parallel/dp.py`)."""
        if id(p) not in self.arg_index and p._grad is not None:
            self.state_grads[id(p)] = (p, self.value_of(p._grad))

    def parallel_plans(self) -> dict[str, tuple]:
        """`parallel` with parameters named by their graph inputs: {"dp": (group, (input name, ...))}."""
        out = {}
        for axis, (group, params) in self.parallel.items():
            ins = [self._first_input(p) for p in params]
            out[axis] = (tuple(group), tuple(v.name for v in ins if v is not None))
        return out

    def add_guard(self, check, why: str) -> None:
        """A later call reuses this trace only while `check()` holds (e.g. a module's training flag)."""
        self.extra_guards.append((check, why))

    def save(self, obj, attr: str) -> None:
        self.restore.append((obj, attr, getattr(obj, attr)))

    def emit(self, op, inputs, attrs):
        vals = [self.value_of(t) for t in inputs]
        prov = self._prov or provenance.here()
        self.b._prov, self.b._tag, self.b.phase = prov, self._tag, self.phase
        return self.b.emit(op, vals, attrs), prov

    @contextlib.contextmanager
    def scope(self, prov=None, tag: str = ""):
        saved = self._prov, self._tag
        self._prov, self._tag = prov or self._prov, tag or self._tag
        try:
            yield
        finally:
            self._prov, self._tag = saved

    # -- the result -------------------------------------------------------------------------
    def finish(self, outputs: list) -> tuple[Graph, list[WriteBack]]:
        """The graph (user outputs first, then write-backs) and the write-back plan. Its meta
        `state_grads` pairs each gradient `backward()` left in a parameter's .grad with that
        parameter's input, by value name: ((grad, param), ...)."""
        vals = [self.value_of(t) for t in outputs]
        plan: list[WriteBack] = []
        inputs = set(self.b.inputs)
        for k, t in self.mutated.items():
            v = self.bindings[k]
            if v in inputs and self.b.inputs.index(v) == self.b.inputs.index(self._first_input(t)):
                continue
            vals.append(v)
            plan.append(WriteBack("data", self.ref(t)))
        for p, _ in self.grad_log.values():
            g = p._grad
            if g is None:
                plan.append(WriteBack("grad_none", self.ref(p)))
            else:
                vals.append(self.value_of(g))
                plan.append(WriteBack("grad", self.ref(p)))
        state_grads = tuple((g.name, self._first_input(p).name) for p, g in self.state_grads.values()
                            if self._first_input(p) is not None)
        return self.b.finish(vals, meta={"state_grads": state_grads} if state_grads else None), plan
