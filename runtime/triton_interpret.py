"""Triton's interpreter on numpy arrays: what `triton_host.launch` uses when no
argument is a CUDA array (the CPU path, and how CI runs generated kernels).

`HostTensor` answers what the interpreter asks of a torch tensor for a numpy
array; `patch_interpreter` fixes three things it gets wrong (see there);
`interpreting()` runs interpreted launches and leaves `triton.language` as it
was, so that compiled kernels can still be built in the same process.
"""
from __future__ import annotations

import contextlib
import functools
import threading

import numpy as np
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from .devices import BF16


@functools.lru_cache(maxsize=None)
def interpreted(fn):
    return InterpretedFunction(fn)


class _RestoreLater:
    def restore(self):
        pass


# The interpreter patches triton.language globally while it runs: one
# interpreted launch at a time (ranks run as threads in tests).
LOCK = threading.RLock()


@contextlib.contextmanager
def interpreting():
    """Run interpreted kernels, then leave triton.language as it was.

    Inside an interpreted kernel, calls of @triton.jit helpers (ours and
    triton.language's: tl.zeros, tl.cdiv, ...) must run interpreted too;
    outside one, JITFunction.__call__ refuses to run.  The interpreter patches
    tl, tl.core and tl.tensor for every grid and every helper call, but undoes
    only the grid's patches (a helper's linger and break compiling later), so
    each patch scope is kept here and undone, last first, when the launch ends."""
    from triton.runtime import interpreter
    call, patch_lang, scopes = JITFunction.__call__, interpreter._patch_lang, []

    def patch_lang_restore_later(fn):
        scopes.append(patch_lang(fn))
        return _RestoreLater()

    JITFunction.__call__ = lambda self, *args, **kwargs: interpreted(self.fn)(*args, **kwargs)
    interpreter._patch_lang = patch_lang_restore_later
    try:
        yield
    finally:
        JITFunction.__call__, interpreter._patch_lang = call, patch_lang
        for scope in reversed(scopes):
            scope.restore()


class HostTensor:
    """The part of torch.Tensor that Triton's interpreter uses, for a numpy array."""
    __slots__ = ("array", "dtype")

    def __init__(self, array: np.ndarray):
        self.array, self.dtype = array, array.dtype

    def data_ptr(self) -> int:
        return self.array.ctypes.data

    # GridExecutor copies each argument's storage to the host and back; a
    # numpy array is on the host already, so its storage is itself.
    def untyped_storage(self): return self
    def cpu(self): return self
    def new_empty(self, *_, **__): return self
    def set_(self, *_): return self
    def copy_(self, _): return self
    def storage_offset(self): return 0
    def size(self): return self.array.shape
    def stride(self): return tuple(s // self.array.itemsize for s in self.array.strides)


@functools.lru_cache(maxsize=None)
def patch_interpreter():
    import triton.language as tl
    from triton.runtime import interpreter
    from triton.runtime.interpreter import InterpreterBuilder, TensorHandle

    # 3.6 turns a scalar into an index with int(array of shape (1,)), which
    # numpy 2 refuses, so `range(lo, hi)` over tensor bounds fails.
    patch_tensor = interpreter._patch_lang_tensor

    def patch_tensor_index(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    interpreter._patch_lang_tensor = patch_tensor_index

    # Both versions multiply bf16 blocks in tl.dot as their raw uint16 bits:
    # widen bf16 operands to fp32 first (exact).
    create_dot = InterpreterBuilder.create_dot

    def widen(h):
        if h.dtype != tl.bfloat16:
            return h
        return TensorHandle((h.data.astype(np.uint32) << 16).view(np.float32), tl.float32)

    def create_dot_bf16(self, a, b, d, *args):
        return create_dot(self, widen(a), widen(b), d, *args)

    # Both truncate fp32 -> bf16 in `x.to(tl.bfloat16)`, where compiled code
    # rounds to nearest even, as ml_dtypes does.
    fp_trunc = InterpreterBuilder.create_fp_trunc

    def create_fp_trunc_rtne(self, src, dst_type):
        if src.dtype in (tl.float32, tl.float64) and dst_type.scalar == tl.bfloat16:
            return TensorHandle(src.data.astype(BF16).view(np.uint16), tl.bfloat16)
        return fp_trunc(self, src, dst_type)

    InterpreterBuilder.create_dot = create_dot_bf16
    InterpreterBuilder.create_fp_trunc = create_fp_trunc_rtne
