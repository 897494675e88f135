"""Launch Triton kernels without PyTorch: numpy arrays under Triton's
interpreter on the CPU, CuPy arrays compiled on CUDA.

    from tracegrad.runtime.triton_host import launch
    from tracegrad.runtime.devices import bf16_array
    launch(add_kernel, (triton.cdiv(n, 1024),), x, y, out, n, BLOCK=1024)

`launch` looks at the array arguments: numpy arrays run the kernel under the
interpreter, CuPy arrays (or `TypedArray` wrappers) run it compiled on the
GPU of those arrays, on CuPy's current stream.  Whether `@triton.jit` makes a
compiled or an interpreted kernel is fixed by TRITON_INTERPRET at decoration
time (for triton.language's own helpers too), so kernels are decorated with
it unset and `make_kernel(fn, interpret=True)` makes the interpreted twin:
one process chooses per call.

What Triton needs, read from its source (3.6, the GPU machines', and 3.9):

* Interpreter (runtime/interpreter.py).  GridExecutor sends every argument
  with a `data_ptr` through `untyped_storage().cpu()`, `new_empty(0,
  device='cpu').set_(storage, offset, size, stride)` and `copy_` back after
  the grid; `HostTensor` answers those for a numpy array with the array
  itself (no copies).  The pointer type is `canonicalize_dtype(str(dtype))`:
  numpy's names ("float32", ml_dtypes' "bfloat16") are Triton's.  Fixed here:
  tl.dot multiplies bf16 blocks as raw uint16 bits and `.to(tl.bfloat16)`
  truncates (both versions); 3.6's `range` over tensor bounds fails with
  numpy 2; a @jit helper called inside a kernel leaves tl patched, which
  breaks later compiles (`interpreting`; all in triton_interpret.py).
* CUDA (backends/nvidia/driver.py).  3.6's CudaDriver asks torch for device,
  stream and capability and reports no active driver without torch; 3.9's
  falls back to the CUDA default stream when torch is not imported.
  `use_cupy_driver()` installs, for both, a CudaDriver whose hooks ask CuPy.
  Arguments need `data_ptr()` and `dtype` (CuPy arrays have neither);
  `TypedArray` supplies them, and for bf16, which CuPy lacks, carries a
  uint16 buffer that Triton sees as `*bf16`.

* Triton's C++ argument specializer imports torch, when it is installed, at
  its first call, to recognise torch tensors.  tracegrad passes none, and the
  import costs seconds of a warm first call; `torch_unseen` makes that import
  fail fast (Triton clears the error) unless the user already imported torch.
"""
from __future__ import annotations

import contextlib
import functools
import sys
import types

import numpy as np
import triton
from triton import knobs
from triton.runtime.autotuner import Autotuner
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from .devices import TypedArray, on
from .triton_interpret import LOCK, HostTensor, interpreted, interpreting, patch_interpreter

# --------------------------------------------------------------------------
# One Python function, two kernels
# --------------------------------------------------------------------------

def _python_function(fn):
    while not isinstance(fn, types.FunctionType):  # JITFunction, Autotuner, ...
        fn = fn.fn
    return fn


def make_kernel(fn, interpret: bool):
    """The interpreted (`interpret=True`) or compiled kernel of `fn`, which may
    be a plain function or a `@triton.jit` one of either kind."""
    if isinstance(fn, Autotuner):
        if interpret:
            raise TypeError(f"{fn.base_fn.__name__} is autotuned; autotuning needs a GPU. "
                            "Pass its block sizes explicitly to run it under the interpreter.")
        return fn
    if isinstance(fn, InterpretedFunction if interpret else JITFunction):
        return fn
    if not interpret:
        # NOTE: triton.language's own @jit helpers (tl.zeros, tl.cdiv, ...) were
        # decorated as interpreted too; the compiler cannot call those.
        raise RuntimeError("TRITON_INTERPRET=1 was set when triton was imported, so Triton "
                           "can only interpret; unset it to compile kernels")
    return interpreted(_python_function(fn))


# --------------------------------------------------------------------------
# CUDA: CuPy arrays, CuPy's device and stream
# --------------------------------------------------------------------------

class _CupyBuffer:  # what triton.set_allocator's callback returns
    def __init__(self, nbytes):
        import cupy
        self.array = cupy.empty(nbytes, dtype=cupy.uint8)

    def data_ptr(self):
        return self.array.data.ptr


def cupy_do_bench(fn, warmup=25, rep=100, quantiles=None, return_mode="mean"):
    """triton.testing.do_bench timed with CuPy events (for the autotuner)."""
    import cupy
    fn()
    cupy.cuda.get_current_stream().synchronize()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(5):
        fn()
    end.record()
    end.synchronize()
    estimate = max(cupy.cuda.get_elapsed_time(start, end) / 5, 1e-3)
    for _ in range(max(1, int(warmup / estimate))):
        fn()
    times = []
    for _ in range(max(1, int(rep / estimate))):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        times.append((start, end))
    end.synchronize()
    times = np.array([cupy.cuda.get_elapsed_time(s, e) for s, e in times])
    if quantiles is not None:
        return [float(q) for q in np.quantile(times, quantiles)]
    return float(getattr(np, return_mode)(times))


@functools.lru_cache(maxsize=None)
def use_cupy_driver():
    """Make Triton's active driver take device, stream and capability from
    CuPy (Triton's own CudaDriver asks torch in 3.6).  Idempotent."""
    import cupy
    from triton.backends.nvidia.driver import CudaDriver, CudaLauncher, CudaUtils

    class CupyCudaDriver(CudaDriver):
        def __init__(self):  # NOTE: CudaDriver.__init__ imports torch in 3.6
            self.utils, self.launcher_cls = CudaUtils(), CudaLauncher

        def get_current_device(self):
            return cupy.cuda.runtime.getDevice()

        def set_current_device(self, device):
            cupy.cuda.runtime.setDevice(device)

        def get_current_stream(self, device=None):
            return cupy.cuda.get_current_stream().ptr

        def get_device_capability(self, device=None):
            cc = cupy.cuda.Device(device).compute_capability  # "90"
            return int(cc[:-1]), int(cc[-1])

        def get_benchmarker(self):
            return cupy_do_bench

    driver = CupyCudaDriver()
    triton.runtime.driver.set_active(driver)
    triton.set_allocator(lambda size, alignment, stream: _CupyBuffer(size))
    return driver


# --------------------------------------------------------------------------
# Arrays of either module, and the launch itself
# --------------------------------------------------------------------------

# NOTE: these run on every launch: the host time of a compiled step shows in
# the time of short kernels (see _launch_compiled).

_SCALARS = frozenset({int, float, bool, type(None)})
collected: list | None = None   # during a dry run, the CUDA launches it made (compile_ahead.py)


def launch(kernel, grid, *args, **meta):
    """Run `kernel[grid](*args, **meta)`: interpreted when no argument is a
    CUDA array, compiled on the arrays' GPU otherwise."""
    host, device, converted = False, None, []
    for a in args:
        kind = type(a)
        if kind in _SCALARS:
            pass
        elif kind is TypedArray:
            device = a.array.device if device is None else device
        elif isinstance(a, np.ndarray):
            host, a = True, HostTensor(a)
        elif kind.__module__.startswith("cupy"):
            device, a = a.device if device is None else device, TypedArray(a)
        elif isinstance(a, np.generic):
            a = a.item()
        converted.append(a)
    if collected is not None:       # a dry run (compile_ahead.collecting): record, launch nothing
        collected.append((make_kernel(kernel, interpret=False), converted, meta))
        return None
    if device is None:
        patch_interpreter()
        with LOCK, interpreting():
            return make_kernel(kernel, interpret=True)[grid](*converted, **meta)
    if host:
        raise TypeError("launch: numpy and CUDA arrays mixed in one kernel call")
    use_cupy_driver()
    with on(device):
        return _launch_compiled(make_kernel(kernel, interpret=False), grid, converted, meta, device.id)


# --------------------------------------------------------------------------
# The compiled launch, with Triton's per-call work done once
# --------------------------------------------------------------------------

# JITFunction.run binds the arguments, specializes them and looks the kernel up
# on every call: 24 us a launch against 8 us for the launcher alone (Triton 3.6,
# H100, measured with perf_counter over 2000 launches); a launch site in a compiled step passes the
# same shapes every time, so the kernel found once is launched directly after.
# The key holds what Triton specializes on: each pointer's dtype and 16-byte
# alignment, each int's value, the constexprs and options.

_COMPILED: dict = {}  # (kernel, device, specialization key) -> _Launcher


class _Launcher:
    __slots__ = ("kernel", "names", "tail")

    def __init__(self, kernel, names, tail):
        self.kernel, self.names, self.tail = kernel, names, tail


def _specialization(args, meta, device_id) -> tuple:
    key = [device_id]
    for a in args:
        if type(a) is TypedArray:
            key.append((a.dtype, a.array.data.ptr & 15 == 0))
        elif isinstance(a, (bool, int)):
            key.append((type(a), a))
        else:
            key.append(type(a))
    key.extend(meta.items())
    return tuple(key)


class NoTorch:
    """A meta path finder under which `import torch` raises ImportError at once. Triton 3.6's
    specializer imports torch and forgets the error; later ones look it up in sys.modules, which this
    leaves alone (a None placed there would break them)."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise ModuleNotFoundError("torch is kept out of this import", name="torch")
        return None


@contextlib.contextmanager
def torch_unseen():
    """Within: `import torch` raises ImportError at once, if torch is not imported yet (see the
    module docstring: Triton's specializer would import it for nothing). Nests; not for threads to
    enter one by one (the pool enters once around all of them)."""
    if "torch" in sys.modules:
        yield
        return
    finder = NoTorch()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def _launch_compiled(kernel, grid, args, meta, device_id):
    import cupy
    if not isinstance(kernel, JITFunction):     # autotuned: the autotuner picks per call
        with torch_unseen():
            return kernel[grid](*args, **meta)
    key = (kernel, _specialization(args, meta, device_id))
    fast = _COMPILED.get(key)
    if fast is None:
        with torch_unseen():
            compiled = kernel[grid](*args, **meta)
        params = list(kernel.signature.parameters.values())
        tail = tuple(meta.get(p.name, p.default) for p in params[len(args):])
        _COMPILED[key] = _Launcher(compiled, tuple(p.name for p in params), tail)
        return compiled
    values = (*args, *fast.tail)
    if callable(grid):
        grid = grid(dict(zip(fast.names, values)))
    ck, stream = fast.kernel, cupy.cuda.get_current_stream().ptr
    hooks = knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook
    ck.run(grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1, stream,
           ck.function, ck.packed_metadata, ck.launch_metadata(grid, stream, *values), *hooks, *values)
    return ck
