"""`apply`: the one door every tensor op goes through.

It checks types with the op's shape rule (errors name the op, the shapes and the user's line),
then either runs the op at once (eager) or records it into the active trace, and, when a
gradient is wanted, links the outputs to a `TapeNode` so `backward` can find its way back.
Eager and traced steps share this path, which is why they compute the same thing.
"""
from __future__ import annotations

import contextlib
import threading

from .codegen.eager import run_op
from .errors import ShapeError
from .ir.builder import Builder
from .ir.errors import OpTypeError
from .ir.ops import get
from . import provenance
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


def apply(op: str, /, *inputs, **attrs):
    """Run or record `op` on tensors; returns a Tensor, or a tuple for multi-output ops."""
    opdef = get(op)
    attrs = opdef.normalize_attrs(attrs)
    types = tuple(t._type for t in inputs)
    try:
        key = (op, types, tuple(attrs.items()))
        out_types = _INFERRED.get(key)
    except TypeError:      # an unhashable attribute: infer every time
        key, out_types = None, None
    if out_types is None:
        try:
            out_types = opdef.infer_types(list(types), attrs)
        except OpTypeError as e:
            raise ShapeError(f"{e}\n  at {provenance.where()}") from None
        if key is not None and len(_INFERRED) < 1 << 16:
            _INFERRED[key] = out_types
    needs_grad = grad_enabled() and not opdef.nondiff and any(t.requires_grad for t in inputs)
    if opdef.is_composite and opdef.vjp is None and needs_grad:
        # differentiate through the decomposition: record its primitives instead
        outs = opdef.decompose(BUILDER, *inputs, **attrs)
        return outs
    tr = _current_trace()
    if tr is not None:
        values, prov = tr.emit(op, inputs, attrs)
        outs = tuple(_tensor()._from_value(v, tr) for v in values)
    else:
        prov = None
        outs = tuple(_tensor()._from_array(a, t) for a, t in zip(_run_eager(op, inputs, attrs), out_types))
    if needs_grad:
        node = TapeNode(op, inputs, outs, attrs, prov)
        for o in outs:
            if o._type.dtype.is_floating:
                o.requires_grad = True
                o._node = node
    return outs[0] if len(outs) == 1 else outs


_TENSOR: list = []


def _tensor():
    # NOTE: tensor.py imports this module, so the class is looked up on first use (then kept)
    if not _TENSOR:
        from .tensor import Tensor
        _TENSOR.append(Tensor)
    return _TENSOR[0]


def _run_eager(op, inputs, attrs):
    device = inputs[0]._type.device if inputs else attrs.get("device", "cpu")
    return run_op(device, op, [t._data for t in inputs], attrs)


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
