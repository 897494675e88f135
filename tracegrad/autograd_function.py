"""`tg.autograd.Function`: custom ops with a hand-written backward, as `torch.autograd.Function`.

    class Exp(tg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = x.exp()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, grad):
            (y,) = ctx.saved_tensors
            return grad * y

    y = Exp.apply(x)

`forward` runs without recording a tape; its outputs are linked to the inputs that require grad by
one tape node whose VJP calls `backward`. Eagerly that computes the gradient; inside
`@tg.compile` (with `loss.backward()` in the step) `backward`'s ops are recorded into the step's
graph like any other VJP. PyTorch's newer form (`forward(*args)` plus `setup_context(ctx, inputs,
output)`) works too.
"""
from __future__ import annotations

from .creation import zeros_like
from .dispatch import TapeNode, grad_enabled, set_grad_enabled
from .tensor import Tensor


class FunctionCtx:
    """What `forward` leaves for `backward`: saved tensors and any attributes set on it."""

    def __init__(self, inputs):
        self.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in inputs)
        self.saved_tensors: tuple = ()
        self.materialize_grads = True
        self.non_differentiable: set = set()

    def save_for_backward(self, *tensors) -> None:
        self.saved_tensors = tuple(tensors)

    def mark_non_differentiable(self, *tensors) -> None:
        self.non_differentiable.update(id(t) for t in tensors)

    def set_materialize_grads(self, value: bool) -> None:
        self.materialize_grads = value

    def mark_dirty(self, *tensors) -> None:
        pass


class Function:
    """Subclass with static `forward(ctx, *args)` and `backward(ctx, *grads)`; call `Cls.apply(*args)`."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("a tg.autograd.Function subclass must define forward")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("a tg.autograd.Function subclass must define backward to be differentiated")

    setup_context = None

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = FunctionCtx(args)
        with set_grad_enabled(False):
            if cls.setup_context is not None:
                out = cls.forward(*args, **kwargs)
                cls.setup_context(ctx, args, out)
            else:
                out = cls.forward(ctx, *args, **kwargs)
        single = not isinstance(out, tuple)
        outs = (out,) if single else tuple(out)
        # NOTE: an output that is an input as is would get the input's history overwritten
        outs = tuple(o.detach() if isinstance(o, Tensor) and any(o is a for a in args) else o for o in outs)
        diff_in = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad]
        if grad_enabled() and diff_in:
            _link(cls, ctx, args, diff_in, outs)
        return outs[0] if single else outs


def _link(cls, ctx, args, diff_in, outs) -> None:
    tensors = [o for o in outs if isinstance(o, Tensor)]
    linked = [o for o in tensors if o.dtype.is_floating and id(o) not in ctx.non_differentiable]
    if not linked:
        return

    def vjp(b, node, cotangents):
        by_id = {id(o): g for o, g in zip(node.outputs, cotangents)}
        grads = []
        for o in outs:
            g = by_id.get(id(o)) if isinstance(o, Tensor) else None
            if g is None and isinstance(o, Tensor) and ctx.materialize_grads:
                g = zeros_like(o)
            grads.append(g)
        res = cls.backward(ctx, *grads)
        res = res if isinstance(res, tuple) else (res,)
        if len(res) < len(args):
            raise TypeError(f"{cls.__name__}.backward returned {len(res)} gradients, but forward took "
                            f"{len(args)} inputs (return None for inputs without a gradient)")
        return [res[i] for i in diff_in]

    node = TapeNode(f"autograd.Function {cls.__name__}", [args[i] for i in diff_in], linked, {}, vjp=vjp)
    for o in linked:
        o.requires_grad, o._node = True, node


def once_differentiable(fn):
    return fn
