"""Worker processes that compile a step's kernels in parallel, as Inductor's pool does: Triton's for
a CUDA compute capability, or (capability 0) the CPU backend's numba loops.

    compile_pool.start(90)                # early: the workers import while the step is traced
    done = compile_pool.get(90).compile(jobs)    # jobs from `job_of`; blocks until all are answered

Threads of one process compiled the GPT-2 step's 43 kernels in 13.4 s on 16 cores (much of
Triton's compiler runs under the interpreter lock); 16 processes compile its 55 kernels and
templates, with their launchers, in 7 s. Each worker (`compile_worker`) compiles into Triton's
cache on disk; the launching process then loads each kernel from there in milliseconds. Workers are plain subprocesses of `python -c`, not
`multiprocessing` children, so the user's script is never imported again in them.

A job that fails in a worker, or that a worker cannot import (a kernel defined in `__main__`),
is left to compile at its first launch, as without the pool. The workers stop when the pool has
been idle for `IDLE_S` seconds, and with this process. `TRACEGRAD_COMPILE_WORKERS` sets how many
there are (0: no pool).
"""
from __future__ import annotations

import atexit
import itertools
import logging
import os
import queue
import subprocess
import sys
import threading
import time

from tqdm import tqdm

from . import kernel_cache
from .compile_worker import Pointer, read_message, write_message

IDLE_S = 60.0          # workers stop after this long without work
TIMEOUT_S = 900.0      # the longest a pool may take over one batch of kernels
log = logging.getLogger("tracegrad.compile")


def workers_wanted() -> int:
    """`TRACEGRAD_COMPILE_WORKERS`, else one per core up to 16."""
    env = os.environ.get("TRACEGRAD_COMPILE_WORKERS")
    return int(env) if env not in (None, "") else min(16, os.cpu_count() or 1)


def _markers() -> str:
    return os.path.join(kernel_cache.cache_dir(), "compiled")


def compiled_before() -> bool:
    """Whether workers compiled into this cache before (then a step's kernels are likely there)."""
    try:
        with os.scandir(_markers()) as entries:
            return next(entries, None) is not None
    except OSError:
        return False


def _done_marker(job: dict, capability: int) -> str:
    """The file saying a worker compiled `job` into the current Triton cache, so a later process skips
    the round trip (the kernel loads from Triton's cache either way)."""
    if capability:
        import triton
        from triton import knobs
        version, cache = triton.__version__, knobs.cache.dir
    else:
        import numba
        version, cache = numba.__version__, ""
    key = repr((job["key"], job["name"], [(a.dtype.name, a.aligned) if isinstance(a, Pointer) else a for a in job["args"]],
                sorted(job["meta"].items()), version, capability, cache))
    return os.path.join(_markers(), kernel_cache.source_hash(key))


def job_of(kernel, args, meta: dict) -> dict | None:
    """A worker's job for launching `kernel` (a JITFunction) on `args` with `meta`, or None when a
    worker could not import the kernel. Buffers become `Pointer`s; ints, floats and None stay."""
    fn = kernel.fn
    module = fn.__module__
    path = fn.__code__.co_filename if module.startswith("tracegrad_kernel_") else None
    if module == "__main__" or (path is None and module not in sys.modules):
        return None
    specs = []
    for a in args:
        if hasattr(a, "data_ptr"):
            specs.append(Pointer.of(a))
        elif a is None or isinstance(a, (bool, int, float, str)):
            specs.append(a)
        else:
            return None
    return dict(module=module, name=fn.__name__, path=path, key=kernel.cache_key, args=specs, meta=dict(meta))


# NOTE: the package's __init__ imports the whole frontend (a second of CPU a worker); kernels live in
# tracegrad.runtime, so the workers stand an empty package in for it and import the runtime alone
_WORKER_MAIN = """
import importlib.util, sys, types
package = types.ModuleType("tracegrad")
package.__path__ = list(importlib.util.find_spec("tracegrad").submodule_search_locations)
sys.modules["tracegrad"] = package
from tracegrad.runtime.compile_worker import serve
serve({capability})
"""


class _Worker:
    def __init__(self, capability: int, env: dict):
        code = _WORKER_MAIN.format(capability=int(capability))
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env)
        self.ready = False

    def ask(self, job_id: int, job: dict):
        """(error or None, seconds) of one job; raises EOFError when the worker is gone."""
        if not self.ready:
            if read_message(self.proc.stdout) is None:
                raise EOFError("the compile worker exited while starting")
            self.ready = True
        write_message(self.proc.stdin, (job_id, job))
        answer = read_message(self.proc.stdout)
        if answer is None:
            raise EOFError(f"the compile worker exited (code {self.proc.poll()})")
        return answer[1], answer[2]

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class CompilePool:
    """`n` workers compiling for one CUDA compute capability (90 for 9.0; 0: the CPU's numba kernels)."""

    def __init__(self, capability: int, n: int):
        self.capability, self.n = capability, n
        self.lock = threading.Lock()
        self.workers: list[_Worker] = []
        self.last_used = time.monotonic()
        self.ids = itertools.count()
        self.stats = {"compiled": 0, "failed": 0, "seconds": 0.0}

    def _start(self) -> None:
        # NOTE: this process's module path, so workers import the same tracegrad (a script may have
        # put a source tree on sys.path itself)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        if self.capability:     # NOTE: the workers must find the same caches as this process, whatever set them
            from triton import knobs
            env["TRITON_CACHE_DIR"] = knobs.cache.dir
        while len(self.workers) < self.n:
            self.workers.append(_Worker(self.capability, env))

    def compile(self, jobs: list[dict], what: str = "GPU kernels", progress: bool = True) -> int:
        """Compile `jobs` (from `job_of`) across the workers; returns how many are compiled (now, or
        by an earlier process into the same caches)."""
        markers = [_done_marker(job, self.capability) for job in jobs]
        todo: queue.SimpleQueue = queue.SimpleQueue()
        for job, marker in zip(jobs, markers):
            if not os.path.exists(marker):
                todo.put((job, marker))
        ready = len(jobs) - todo.qsize()
        if todo.empty():
            return ready
        os.makedirs(os.path.dirname(markers[0]), exist_ok=True)
        with self.lock:
            self._start()
            compiled: list[bool] = []

            def drain(worker: _Worker) -> None:
                while True:
                    try:
                        job, marker = todo.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        error, seconds = worker.ask(next(self.ids), job)
                    except (EOFError, OSError) as e:
                        log.debug("compile worker lost: %s", e)
                        return
                    self.stats["seconds"] += seconds
                    compiled.append(error is None)
                    bar.update()
                    if error is None:
                        open(marker, "w").close()
                        log.debug("%s compiled in a worker in %.2f s", job["name"], seconds)
                    else:
                        log.debug("compiling %s in a worker failed:\n%s", job["name"], error)
            t0 = time.monotonic()
            # NOTE: a bar once it takes a while (a cold GPT-2 step: 7 s), as the CPU kernels have
            bar = tqdm(total=todo.qsize(), desc=f"compiling {what} ({len(self.workers)} processes, cached on disk)",
                       unit="kernel", delay=2.0, leave=False, disable=not progress)
            threads = [threading.Thread(target=drain, args=(w,), daemon=True) for w in self.workers]
            for t in threads:
                t.start()
            for t in threads:
                t.join(max(0.0, t0 + TIMEOUT_S - time.monotonic()))
            if any(t.is_alive() for t in threads):     # NOTE: a compiler that hangs: its kernel compiles at launch
                log.warning("compile workers still busy after %.0f s: stopped", TIMEOUT_S)
                for w in self.workers:
                    w.proc.kill()
                for t in threads:
                    t.join()
            bar.close()
            log.info("compiled %d kernels in %.1f s", sum(compiled), time.monotonic() - t0)
            self.workers = [w for w in self.workers if w.proc.poll() is None]
            self.stats["compiled"] += sum(compiled)
            self.stats["failed"] += len(compiled) - sum(compiled)
            self.last_used = time.monotonic()
            return ready + sum(compiled)

    def stop(self, idle_only: bool = False) -> None:
        with self.lock:
            if idle_only and time.monotonic() - self.last_used < IDLE_S:
                return
            for w in self.workers:
                w.stop()
            self.workers = []


_POOLS: dict[int, CompilePool] = {}
_POOLS_LOCK = threading.Lock()


def start(capability: int) -> CompilePool | None:
    """The pool for `capability`, its workers starting now (None when `TRACEGRAD_COMPILE_WORKERS=0`)."""
    pool = get(capability)
    if pool is not None:
        with pool.lock:
            pool._start()
            pool.last_used = time.monotonic()
    return pool


def get(capability: int) -> CompilePool | None:
    """The pool for `capability`; its workers start with its first compile that needs them (None when
    `TRACEGRAD_COMPILE_WORKERS=0`)."""
    n = workers_wanted()
    if n <= 0:
        return None
    with _POOLS_LOCK:
        pool = _POOLS.get(capability)
        if pool is None:
            pool = _POOLS[capability] = CompilePool(capability, n)
            if len(_POOLS) == 1:
                atexit.register(stop_all)
                threading.Thread(target=_reap, daemon=True, name="tracegrad-compile-reaper").start()
    return pool


def stop_all() -> None:
    for pool in list(_POOLS.values()):
        pool.stop()


def _reap() -> None:
    """Stop workers that have been idle for IDLE_S: they hold memory the training step may want."""
    while True:
        time.sleep(IDLE_S / 4)
        for pool in list(_POOLS.values()):
            pool.stop(idle_only=True)
