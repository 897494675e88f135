"""`apply`: the one door every tensor op goes through.

It checks types with the op's shape rule (errors name the op, the shapes and the user's line),
then either runs the op at once (eager) or records it into the active trace, and, when a
gradient is wanted, links the outputs to a `TapeNode` so `backward` can find its way back.
Eager and traced steps share this path, which is why they compute the same thing.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from .bounds import check_eager, needs_index_check
from .codegen.eager import eager_cpu_kernel, run_op
from .codegen.numpy_program import NaNError, check_nans_enabled, has_nan
from .errors import ShapeError, TracegradError
from .ir.graph import Value
from .runtime.shards import Sharded
from .ir.builder import Builder
from .ir.errors import OpTypeError
from .ir.ops import get
from . import provenance, tensor as tensor_mod
from .trace import current as _current_trace

_state = threading.local()


def grad_enabled() -> bool:
    return getattr(_state, "grad", True)


@contextlib.contextmanager
def set_grad_enabled(mode: bool):
    old = grad_enabled()
    _state.grad = bool(mode)
    try:
        yield
    finally:
        _state.grad = old


class TapeNode:
    """One recorded op for autograd: what ran, on which tensors, giving which tensors. `vjp`, when
    set, replaces the op's registered rule (a compiled function's call carries its backward)."""
    __slots__ = ("op", "inputs", "outputs", "attrs", "prov", "freed", "vjp")

    def __init__(self, op, inputs, outputs, attrs, prov=None, vjp=None):
        self.op, self.inputs, self.outputs, self.attrs, self.prov = op, inputs, outputs, attrs, prov
        self.freed, self.vjp = False, vjp


# NOTE: the output types of an op depend only on (op, input types, attributes); eager mode calls the
# same few hundred combinations every step, so they are inferred once
_INFERRED: dict = {}
# (op, input types, attributes) -> (output types, the numpy lambda, several outputs?) of an eager CPU
# primitive that needs nothing but its inputs (no index check, no collective, no composite)
_EAGER_CPU: dict = {}


def apply(op: str, /, *inputs, **attrs):
    """Run or record `op` on tensors; returns a Tensor, or a tuple for multi-output ops."""
    opdef = get(op)
    attrs = opdef.normalize_attrs(attrs)
    types = tuple(t._type for t in inputs)
    try:
        key = (op, types, tuple(attrs.items()))
        fast = _EAGER_CPU.get(key)
    except TypeError:      # an unhashable attribute: infer every time
        key, fast = None, None
    if fast is not None and _current_trace() is None:
        out = _fast_cpu(op, opdef, inputs, attrs, fast)
        if out is not None:
            return out
    out_types = _INFERRED.get(key) if key is not None else None
    if out_types is None:
        try:
            out_types = opdef.infer_types(list(types), attrs)
        except OpTypeError as e:
            raise ShapeError(f"{e}\n  at {provenance.where()}") from None
        if key is not None and len(_INFERRED) < 1 << 16:
            _INFERRED[key] = out_types
    needs_grad = grad_enabled() and not opdef.nondiff and any(t.requires_grad for t in inputs)
    tr = _current_trace()
    if opdef.is_composite and opdef.vjp is None and needs_grad:
        # differentiate through the decomposition: record its primitives instead (tagged, as the
        # decompose pass tags them, so errors and kernel names still say which op the user called)
        if tr is None:
            return opdef.decompose(BUILDER, *inputs, **attrs)
        with tr.scope(None, f"decompose({op})"):
            return opdef.decompose(BUILDER, *inputs, **attrs)
    if tr is not None:
        values, prov = tr.emit(op, inputs, attrs)
        if not grad_enabled() and not opdef.nondiff and tr.phase == "forward" \
                and any(t.requires_grad for t in inputs):
            # NOTE: `no_grad` must show in the graph: a compiled function's outputs may be
            # differentiated later, through the traced graph alone
            values = [tr.b.emit("stop_gradient", [v], {})[0] if v.type.dtype.is_floating else v
                      for v in values]
        outs = tuple(_tensor()._from_value(v, tr) for v in values)
    else:
        prov = None
        outs = tuple(_tensor()._from_array(a, t) for a, t in zip(_run_eager(op, inputs, attrs), out_types))
        if check_nans_enabled():
            _check_nans(op, inputs, outs)
    if needs_grad:
        node = TapeNode(op, inputs, outs, attrs, prov)
        for o in outs:
            if o._type.dtype.is_floating:
                o.requires_grad = True
                o._node = node
    if tr is None and key is not None and len(_EAGER_CPU) < 1 << 16 and _fast_applies(op, opdef, types, attrs):
        _EAGER_CPU[key] = (out_types,) + eager_cpu_kernel(op, types, key[2])
    return outs[0] if len(outs) == 1 else outs


def _fast_applies(op, opdef, types, attrs) -> bool:
    device = types[0].device if types else attrs.get("device", "cpu")
    return (device == "cpu" and not opdef.is_composite and opdef.kind != "collective" and not opdef.side_effect
            and not needs_index_check(op) and all(t.device == "cpu" for t in types))


def _fast_cpu(op, opdef, inputs, attrs, fast):
    """The common eager case in few steps: a CPU primitive on host arrays, its types and its numpy
    lambda already known from an earlier call with the same signature. None: take the full path."""
    out_types, fn, multi = fast
    arrays = [t._data for t in inputs]
    for a in arrays:
        if type(a) is not _NDARRAY:     # a traced Value used outside its step, a bf16 TypedArray, ...
            return None
    if check_nans_enabled():
        return None
    res = fn(*arrays)
    from_array = _tensor()._from_array
    if multi:
        outs = tuple([from_array(np.asarray(a), t) for a, t in zip(res, out_types)])
    else:
        outs = (from_array(res if type(res) is _NDARRAY else np.asarray(res), out_types[0]),)
    if not opdef.nondiff and grad_enabled():
        for t in inputs:
            if t.requires_grad:
                node = TapeNode(op, inputs, outs, attrs, None)
                for o in outs:
                    if o._type.dtype.is_floating:
                        o.requires_grad = True
                        o._node = node
                break
    return outs[0] if len(outs) == 1 else outs


_NDARRAY = np.ndarray


def _check_nans(op, inputs, outs) -> None:
    """TRACEGRAD_CHECK_NANS=1 in eager mode: the first op that turns NaN-free inputs into a NaN raises."""
    floats = [o for o in outs if o._type.dtype.is_floating]
    if not any(has_nan(o._data) for o in floats):
        return
    if any(t._type.dtype.is_floating and has_nan(t._data) for t in inputs):
        return
    raise NaNError(f"first NaN produced by {op}({', '.join(str(t._type) for t in inputs)}) at {provenance.where()}")


def _tensor():
    return tensor_mod.Tensor   # NOTE: tensor.py imports this module before it defines the class


_HELD = (Value, Sharded)       # storage that is not an array of this process: traced, or a block


def _run_eager(op, inputs, attrs):
    for t in inputs:
        if isinstance(t._data, _HELD):
            if type(t._data) is Sharded:     # a block of a parallel plan: the op reads the whole, gathered
                return _run_eager(op, [_tensor()._from_array(x._data.full(), x._type) if type(x._data) is Sharded
                                       else x for x in inputs], attrs)
            raise TracegradError(
                f"{op}: a tensor computed inside a compiled step ({t._data.name}: {t._type}) is used outside "
                f"it\n  at {provenance.where()}\ninside @tg.compile tensors are symbolic; return the tensor "
                "from the step to use its value")
    device = inputs[0]._type.device if inputs else attrs.get("device", "cpu")
    comm = None
    if get(op).kind == "collective":
        from .distributed import current_comm    # NOTE: distributed imports dispatch; only collectives need it
        comm = current_comm()
    elif device == "cpu":
        check_eager(op, inputs, attrs)
    return run_op(device, op, [t._data for t in inputs], attrs, comm)


class TensorBuilder(Builder):
    """Rules and decompositions run through `apply`, on Tensors, eagerly or into a trace."""

    def emit(self, op, inputs, attrs):
        out = apply(op, *inputs, **attrs)
        return out if isinstance(out, tuple) else (out,)

    def type_of(self, h):
        return h._type

    @contextlib.contextmanager
    def scope(self, node=None, tag: str = ""):
        tr = _current_trace()
        if tr is None:
            yield
            return
        with tr.scope(getattr(node, "prov", None), tag):
            yield


BUILDER = TensorBuilder()
