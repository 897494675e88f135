"""A process that compiles Triton kernels for a CUDA target it is told, with no GPU of its own,
or the CPU's numba loop kernels: the worker side of `compile_pool`.

    python -m tracegrad.runtime.compile_worker 90      # compute capability 9.0 (0: CPU kernels only)

Jobs arrive on stdin and results leave on stdout, each a pickled object behind an 8-byte length.
A job names a `@triton.jit` function (its module, or the file of a generated kernel), the
specialization of each argument and the launch options; the worker calls the function's
`warmup`, which runs Triton's whole compiler (MLIR passes, LLVM, ptxas) and stores the binary in
Triton's cache on disk. The process that launches the kernel later finds it there, because it
asks Triton for the same source, signature, target and options.

Compiling needs no device: the worker's driver answers Triton's questions (which device, which
stream, which target) from the capability on its command line, and never loads libcuda.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import struct
import sys
import time
import traceback
import warnings

import numpy as np

HEADER = struct.Struct("<Q")


def write_message(f, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(HEADER.pack(len(data)) + data)
    f.flush()


def read_message(f):
    """The next object from `f`, or None at end of file."""
    head = f.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (n,) = HEADER.unpack(head)
    return pickle.loads(f.read(n))


class Pointer:
    """A pointer argument to compile for: what Triton specializes a buffer on (its element type
    and whether its address is 16-byte aligned)."""
    __slots__ = ("dtype", "aligned")

    def __init__(self, dtype, aligned: bool = True):
        self.dtype, self.aligned = np.dtype(dtype), aligned

    @classmethod
    def of(cls, buffer) -> "Pointer":
        """What `buffer` (anything with `dtype` and `data_ptr()`) is specialized as."""
        return cls(buffer.dtype, buffer.data_ptr() % 16 == 0)

    def data_ptr(self) -> int:
        return 0 if self.aligned else 8

    def __reduce__(self):
        return Pointer, (self.dtype.name, self.aligned)


class TargetDriver:
    """Triton's active driver in a worker: a fixed CUDA target and no device behind it."""

    def __init__(self, capability: int):
        self.capability = capability

    def is_active(self) -> bool:
        return True

    def get_current_device(self) -> int:
        return 0

    def set_current_device(self, device) -> None:
        pass

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_device_capability(self, device=None) -> tuple[int, int]:
        return divmod(self.capability, 10)

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget
        return GPUTarget("cuda", self.capability, 32)

    def get_active_torch_device(self):
        return None


def kernel_of(module: str, name: str, path: str | None):
    """The jit function `name` of `module`; a generated kernel's module is loaded from its file
    under the same module name, so Triton sees the same source and globals as the launching process."""
    mod = sys.modules.get(module)
    if mod is None and path is not None:
        spec = importlib.util.spec_from_file_location(module, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules[module] = mod
    elif mod is None:
        mod = importlib.import_module(module)
    return getattr(mod, name)


def compile_job(job: dict) -> None:
    kernel = kernel_of(job["module"], job["name"], job.get("path"))
    if job.get("numba"):       # a CPU loop kernel: numba compiles it into its cache beside the file
        import numba
        arrays = [numba.types.Array(numba.from_dtype(np.dtype(d)), 1, "C") for d in job["args"]]
        kernel.compile((numba.int64, numba.int64, *arrays))
        return
    build_launcher(kernel.warmup(*job["args"], grid=(1,), **job["meta"]))


def build_launcher(compiled) -> bool:
    """Build the kernel's C launcher into Triton's cache as well. Triton 3.6 compiles one per kernel
    signature with the host's C compiler at the first launch (a quarter second each: 14 s for the
    GPT-2 step's 55 kernels); later versions launch every kernel through one built-in launcher, and
    this does nothing."""
    try:
        from triton.backends.nvidia.driver import CudaLauncher, make_launcher  # noqa: F401  (3.6 has make_launcher)
    except ImportError:
        return False
    try:
        CudaLauncher(compiled.src, compiled.metadata)
        return True
    except Exception:      # NOTE: no libcuda to link against here: the launch builds it
        return False


def serve(capability: int, stdin=None, stdout=None) -> None:
    """Compile jobs from `stdin` until it closes, answering each with (id, error or None, seconds)."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.nice(5)                     # NOTE: the launching process is still tracing while workers start
    sys.stdout = sys.stderr        # NOTE: the results pipe carries nothing that imports print
    warnings.simplefilter("ignore")
    if capability:             # NOTE: 0 compiles CPU loop kernels only: no Triton
        import triton
        triton.runtime.driver.set_active(TargetDriver(capability))
        from .triton_host import NoTorch
        sys.meta_path.insert(0, NoTorch())     # NOTE: Triton's specializer would import torch for nothing
    write_message(stdout, ("ready", None, 0.0))
    while (msg := read_message(stdin)) is not None:
        job_id, job = msg
        t0 = time.perf_counter()
        try:
            compile_job(job)
            error = None
        except Exception:
            error = traceback.format_exc(limit=4)
        write_message(stdout, (job_id, error, time.perf_counter() - t0))


if __name__ == "__main__":
    serve(int(sys.argv[1]))
