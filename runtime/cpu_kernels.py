"""Running generated CPU loop kernels: numba compilation, cached on disk, and the call wrapper.

Each distinct kernel source (its name left out, so identical layers share one compile) is written
once to `$TRACEGRAD_CACHE_DIR/cpu/` (default `~/.cache/tracegrad/cpu/`) as a module and imported;
numba's `cache=True` keeps the machine code beside it, so a later process skips the compile.
A call splits its rows over `set_threads` threads when it has enough work; the compiled
functions release the GIL.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
import warnings

import numpy as np

from . import cpu_choice, kernel_cache

_LOADED: dict[str, object] = {}
_LOCK = threading.Lock()


def cache_dir() -> str:
    return os.path.join(kernel_cache.cache_dir(), "cpu")


def source_key(name: str, source: str) -> str:
    return hashlib.sha1(source.replace(name, "KERNEL").encode()).hexdigest()[:20]


def load(name: str, source: str, key: str | None = None):
    """The numba dispatcher of function `name` defined by `source` (compiled on first call); `key`
    is `source_key(name, source)`, when the caller has it."""
    key = key or source_key(name, source)
    with _LOCK:
        fn = _LOADED.get(key)
        if fn is not None:
            return fn
        d = cache_dir()
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"k_{key}.py")
        if not os.path.exists(path):
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(source.replace(name, "KERNEL"))
            os.replace(tmp, path)     # NOTE: atomic, so concurrent processes never see half a file
        modname = f"tracegrad_cpu_k_{key}"
        spec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        spec.loader.exec_module(mod)
        fn = _LOADED[key] = mod.KERNEL
        return fn


def compile_all(kernels, background: bool = False) -> None:
    """Compile `(Kernel, argument dtypes)` pairs now rather than at their first calls: a model's first
    run compiles each distinct kernel in about a second (30 s for the demo GPT's step). Worker
    processes (`compile_pool`, one per core) compile them into numba's cache beside their files, and
    this process loads them from there (later runs load them at once), with a progress bar once it
    takes a while. `background` returns at once, the workers compiling meanwhile: a `Call` runs its
    numpy ops until its loops are in the cache, then loads them (`Call.ready`)."""
    from . import compile_pool
    todo = list({id(k.fn): (k, dts) for k, dts in kernels if not k.fn.signatures}.values())  # shared loops once
    pool = compile_pool.get(0) if len(todo) > 1 else None
    if pool is None:
        _load(todo, progress=True)
        return
    jobs = [dict(numba=True, module=k.fn.py_func.__module__, name=k.fn.py_func.__name__,
                 path=k.fn.py_func.__code__.co_filename, key=k.fn.py_func.__module__,
                 args=[np.dtype(d).str for d in dts], meta={}) for k, dts in todo]
    if not background:
        pool.compile(jobs, what="CPU kernels (numba)")
        _load(todo, progress=True)
        return
    for k, dts in todo:
        _PENDING[id(k.fn)] = dts

    def compile_in_workers():
        # NOTE: no numba in this thread: the loads happen where the kernels are called (numba's
        # compiler is not thread-safe with the caller's `warnings.catch_warnings`, and holds the GIL)
        pool.compile(jobs, what="CPU kernels (numba)", progress=False)
        for k, _ in todo:
            _IN_CACHE.add(id(k.fn))
    threading.Thread(target=compile_in_workers, daemon=True, name="tracegrad-cpu-compile").start()


_PENDING: dict[int, list] = {}   # id(dispatcher) -> argument dtypes, for loops compiling in the background
_FAILED: dict[int, str] = {}     # id(dispatcher) -> why numba refused it
_IN_CACHE: set = set()           # of those, the ids whose workers have finished (ready to load)


def _load(todo, progress: bool) -> None:
    """Compile (or, after the workers, load from numba's cache) each kernel for its argument types.
    A kernel numba refuses is marked `failed`, with a warning: its group runs as its numpy ops."""
    import numba
    from tqdm import tqdm
    with tqdm(total=len(todo), desc="compiling CPU kernels (numba, cached on disk)", unit="kernel", delay=2.0,
              leave=False, disable=not progress) as bar:
        for k, dts in todo:
            arrays = [numba.types.Array(numba.from_dtype(np.dtype(d)), 1, "C") for d in dts]
            try:
                k.fn.compile((numba.int64, numba.int64, *arrays))
            except Exception as e:   # noqa: BLE001  (numba's errors have no common base)
                _FAILED[id(k.fn)] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                warnings.warn(f"tracegrad: the CPU loops of kernel {k.name} did not compile ({k.failed}); "
                              f"it runs as its numpy ops", RuntimeWarning, stacklevel=2)
            bar.update()


def loaded(kernel) -> bool:
    """Whether kernel's loop is compiled here (or numba refused it); one whose workers have finished
    is loaded now."""
    fn = kernel.fn
    if fn.signatures or id(fn) in _FAILED:
        return True
    key = id(fn)
    if key not in _IN_CACHE:
        return False
    _load([(kernel, _PENDING.pop(key))], progress=False)
    _IN_CACHE.discard(key)
    return True


def flat(x) -> np.ndarray:
    """A kernel argument: the C-contiguous flat view (a copy only for strided views)."""
    return np.ascontiguousarray(x).reshape(-1)


PARALLEL_MIN = 1 << 15      # elements of work before a call is split over threads
_THREADS = [1]
_POOL: list = [None]


def set_threads(n: int) -> None:
    """Threads the kernels split their rows over (`tracegrad.set_num_threads` sets it)."""
    _THREADS[0] = max(1, int(n))


def _pool():
    if _POOL[0] is None:
        from concurrent.futures import ThreadPoolExecutor
        _POOL[0] = ThreadPoolExecutor(max_workers=16, thread_name_prefix="tracegrad-cpu")
    return _POOL[0]


class Kernel:
    """One compiled loop nest: `fn(x0, x1, *inputs, *outputs)` over rows [x0, x1)."""

    __slots__ = ("name", "fn", "key", "xnumel", "work")

    def __init__(self, name: str, source: str, xnumel: int, rnumel: int):
        self.name, self.key = name, source_key(name, source)
        self.fn = load(name, source, self.key)
        self.xnumel, self.work = xnumel, xnumel * rnumel

    @property
    def failed(self) -> str | None:
        """Why numba refused its loops, if it did (its group then runs as numpy ops)."""
        return _FAILED.get(id(self.fn))

    def run(self, arrays) -> None:
        split_rows(self.fn, self.xnumel, self.work, *arrays)


def split_rows(fn, n: int, work: int, *args) -> None:
    """fn(x0, x1, *args) over rows [0, n), split over `set_threads` threads when there is enough work
    (fn is a numba function that releases the GIL, so the pool's threads run side by side)."""
    t = _THREADS[0]
    if t == 1 or work < PARALLEL_MIN or n < 2:
        fn(0, n, *args)
        return
    t = min(t, n)
    cuts = [n * k // t for k in range(t + 1)]
    futures = [_pool().submit(fn, cuts[k], cuts[k + 1], *args) for k in range(1, t)]
    fn(cuts[0], cuts[1], *args)
    for f in futures:
        f.result()


class Call:
    """A kernel node as the host program calls it: inputs in, fresh outputs back. A foreach node
    runs one `Kernel` per part, each on its own inputs and outputs (positions in the node's).

    With a `reference` (the same group as numpy calls), the engine is chosen at the first call: the
    one recorded for this kernel, these shapes and the thread count, else measured on this call's
    inputs and recorded (`cpu_choice`). Without one, it runs the loops."""

    __slots__ = ("parts", "outs", "reference", "engine")

    def __init__(self, parts: list[tuple[Kernel, list[int], list[int]]], outs: list[tuple[tuple, np.dtype]],
                 reference=None):
        self.parts, self.outs, self.reference = parts, outs, reference
        self.engine = "loops" if reference is None else None

    def loops(self, *ins):
        outs = [np.empty(shape, dtype) for shape, dtype in self.outs]
        flat_in = [flat(x) for x in ins]
        flat_out = [o.reshape(-1) for o in outs]
        try:
            for kernel, i, o in self.parts:
                kernel.run([flat_in[j] for j in i] + [flat_out[j] for j in o])
        except IndexError:
            # NOTE: a loop stops at a bad index with the op's name only; the numpy ops check the
            # same indices and say which value and which of the user's lines
            if self.reference is not None:
                self.numpy(*ins)
            raise
        return outs[0] if len(outs) == 1 else tuple(outs)

    def numpy(self, *ins):
        outs = self.reference(*ins)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def ready(self) -> bool:
        """Whether every part's loop is compiled (a tiered program's compile in the background)."""
        return all([loaded(k) for k, _, _ in self.parts])

    def __call__(self, *ins):
        if self.engine == "loops":
            return self.loops(*ins)
        if self.engine == "numpy":
            return self.numpy(*ins)
        if not self.ready():       # NOTE: a tiered program's loops still compiling: its numpy ops meanwhile
            return self.numpy(*ins)
        if any(k.failed for k, _, _ in self.parts):
            self.engine = "numpy"
            return self.numpy(*ins)
        cache = cache_dir()
        key = cpu_choice.key([k.key for k, _, _ in self.parts], ins, _THREADS[0])
        engine = cpu_choice.recorded(key, cache)
        if engine is None:
            measured, outs = cpu_choice.measure(lambda: self.loops(*ins), lambda: self.numpy(*ins))
            self.engine = cpu_choice.record(key, measured, cache)
            return outs[self.engine]
        self.engine = engine
        return self(*ins)
