"""The autograd API: `backward`, `no_grad`/`enable_grad`, and JAX-style `grad`/`value_and_grad`.

All of it runs the IR's one autodiff driver (`ir.passes.autodiff.backprop`) over the tape of
`TapeNode`s that `apply` recorded, through the frontend builder: eagerly that computes the
gradients, inside `@tg.compile` it records the backward ops into the step's graph.
"""
from __future__ import annotations

import functools
import threading

from .dispatch import BUILDER, TapeNode, grad_enabled, set_grad_enabled
from .errors import TracegradError
from .ir.passes.autodiff import backprop
from . import trace as _trace
from .creation import ones_like


class no_grad:
    """Context manager and decorator: ops inside record no gradient."""

    def __enter__(self):
        self._cm = set_grad_enabled(False)
        self._cm.__enter__()

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(False):
                return fn(*args, **kwargs)
        return wrapper


class enable_grad(no_grad):
    def __enter__(self):
        self._cm = set_grad_enabled(True)
        self._cm.__enter__()

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(True):
                return fn(*args, **kwargs)
        return wrapper


class inference_mode(no_grad):  # noqa: N801
    """`with tg.inference_mode():` / `@tg.inference_mode()`: no gradients recorded (as no_grad;
    tracegrad has no version counters to skip)."""

    def __init__(self, mode: bool = True):
        self.mode = mode

    def __enter__(self):
        self._cm = set_grad_enabled(not self.mode and grad_enabled())
        self._cm.__enter__()

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with inference_mode(self.mode):
                return fn(*args, **kwargs)
        return wrapper


def is_inference_mode_enabled() -> bool:
    return not grad_enabled()


def is_grad_enabled() -> bool:
    return grad_enabled()


def _tape(roots) -> list[TapeNode]:
    """Nodes reachable from `roots`, in topological order (inputs before users)."""
    order, seen = [], set()
    stack = [(t._node, False) for t in roots if t._node is not None]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.freed:
            raise TracegradError("trying to backward through the graph a second time; pass retain_graph=True "
                                 "to the first backward() if you need to")
        stack.append((node, True))
        stack.extend((x._node, False) for x in node.inputs if x._node is not None and id(x._node) not in seen)
    return order


def _leaves(nodes) -> list:
    out, seen = [], set()
    for n in nodes:
        for x in n.inputs:
            if x._node is None and x.requires_grad and id(x) not in seen:
                seen.add(id(x))
                out.append(x)
    return out


def gradients(outputs, inputs, grad_outputs=None, create_graph: bool = False, retain_graph=None):
    """d outputs / d inputs (like torch.autograd.grad); None where an input is not reached."""
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif not isinstance(grad_outputs, (list, tuple)):
        grad_outputs = [grad_outputs]
    seeds = {}
    for y, g in zip(outputs, grad_outputs):
        if not y.requires_grad:
            raise TracegradError("element 0 of tensors does not require grad and does not have a grad_fn")
        if g is None:
            if y.numel() != 1:
                raise TracegradError(f"grad can be implicitly created only for scalar outputs, got shape {list(y.shape)}")
            g = ones_like(y)
        seeds[y] = g
    nodes = _tape(outputs)
    tr = _trace.current()
    phase = tr.phase if tr is not None else None
    if tr is not None:
        tr.phase = "backward"
    try:
        with set_grad_enabled(create_graph):
            grads = backprop(nodes, BUILDER, seeds, list(inputs))
    finally:
        if tr is not None:
            tr.phase = "update" if phase == "forward" else phase
    if not (retain_graph if retain_graph is not None else create_graph):
        for n in nodes:
            # NOTE: a node and its outputs point at each other; cut that here so the step's tensors
            # are freed by reference counting now, not by a garbage collection that also walks every
            # live object (with compiled graphs in memory, one such pass cost more than the step)
            n.freed, n.inputs, n.outputs, n.vjp = True, (), (), None
    return grads


_after = threading.local()    # .hooks: callables run once after this thread's next eager backward() (DDP)


def after_backward(fn) -> None:
    """Run `fn()` once, right after this thread's next eager `backward()` has set the gradients."""
    hooks = _after.__dict__.setdefault("hooks", [])
    if fn not in hooks:
        hooks.append(fn)


def backward(tensor, gradient=None, retain_graph=None, create_graph: bool = False, inputs=None) -> None:
    leaves = list(inputs) if inputs is not None else _leaves(_tape([tensor]))
    grads = gradients([tensor], leaves, None if gradient is None else [gradient], create_graph, retain_graph)
    tr = _trace.current()
    for leaf, g in zip(leaves, grads):
        if g is None:
            continue
        if not create_graph:
            g = g.detach()
        leaf.grad = g if leaf.grad is None else leaf.grad + g
        if tr is not None:     # a data-parallel pass may average it over the ranks
            tr.mark_state_grad(leaf)
    hooks = getattr(_after, "hooks", None)
    if tr is None and hooks:
        _after.hooks = []
        for fn in hooks:
            fn()


def _argnums(argnums):
    return (argnums,) if isinstance(argnums, int) else tuple(argnums)


def value_and_grad(fn, argnums=0, has_aux: bool = False):
    """fn -> (value, grads) like jax.value_and_grad; nests (grad of grad works)."""
    nums = _argnums(argnums)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        args = list(args)
        for i in nums:   # differentiate w.r.t. a fresh leaf unless an outer transform already tracks it
            if not args[i].requires_grad:
                args[i] = args[i].detach().requires_grad_(True)
        with set_grad_enabled(True):
            out = fn(*args, **kwargs)
            value, aux = (out if has_aux else (out, None))
            # NOTE: a value that does not depend on the arguments has zero gradient (as in JAX);
            # so grad of grad of a linear function is zero, not an error
            grads = gradients([value], [args[i] for i in nums], create_graph=True) if value.requires_grad \
                else [None] * len(nums)
        grads = [g if g is not None else args[i].zeros_like() for g, i in zip(grads, nums)]
        grads = grads[0] if isinstance(argnums, int) else tuple(grads)
        return ((value, aux), grads) if has_aux else (value, grads)
    return wrapped


def grad(fn, argnums=0, has_aux: bool = False):
    """fn -> gradient of fn (a scalar function) w.r.t. argument(s) `argnums`, like jax.grad."""
    vg = value_and_grad(fn, argnums, has_aux)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        out, g = vg(*args, **kwargs)
        return (g, out[1]) if has_aux else g
    return wrapped
