"""Matmul through cuBLAS's `cublasGemmEx` on CuPy buffers, bf16 included (CuPy's own matmul has
no bf16; a bf16 `TypedArray` is a uint16 buffer, which cuBLAS reads as CUDA_R_16BF).

    from tracegrad.runtime.cublas import gemm
    c = gemm(a, b)          # a [M, K] or [Z, M, K], b [K, N] or [Z, K, N]; fp32 accumulation

Row-major C = A @ B is column-major C^T = B^T @ A^T, so cuBLAS gets (B, A) and each operand is
passed as it lies: a row-major operand is its own transpose in column-major order, and a
transposed view (`w.T`, strides (1, K)) is read with op T, so neither needs a copy.
"""
from __future__ import annotations

import ctypes
import functools

import numpy as np

from .devices import BF16, TypedArray, empty

CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF = 0, 2, 14
CUBLAS_COMPUTE_32F = 68
CUBLAS_GEMM_DEFAULT = -1
OP_N, OP_T = 0, 1
_ONE, _ZERO = np.ones((), np.float32), np.zeros((), np.float32)


class _Cublas:
    """cuBLAS through ctypes, one handle per device with a workspace of its own. CuPy's wrappers
    refuse every call while a stream is being captured; these calls may be captured into a CUDA
    graph, and with the workspace set cuBLAS allocates nothing while they are."""

    WORKSPACE = 32 << 20     # NOTE: what PyTorch gives Hopper GPUs; cuBLAS's fast kernels want it

    def __init__(self):
        import cupy
        from cupy_backends.cuda.libs import cublas as _loaded   # noqa: F401  NOTE: loads CuPy's libcublas
        self.lib = _open_loaded("libcublas.so")
        self.handles, self.workspaces = {}, {}
        for name, res in (("cublasGemmEx", ctypes.c_int), ("cublasGemmStridedBatchedEx", ctypes.c_int),
                          ("cublasCreate_v2", ctypes.c_int), ("cublasSetStream_v2", ctypes.c_int),
                          ("cublasSetWorkspace_v2", ctypes.c_int)):
            getattr(self.lib, name).restype = res
        self._cupy = cupy

    def handle(self):
        """This device's handle, bound to the current stream."""
        dev = self._cupy.cuda.Device().id
        h = self.handles.get(dev)
        if h is None:
            h = ctypes.c_void_p()
            _check(self.lib.cublasCreate_v2(ctypes.byref(h)), "cublasCreate")
            ws = self._cupy.empty(self.WORKSPACE, self._cupy.uint8)
            _check(self.lib.cublasSetWorkspace_v2(h, ctypes.c_void_p(ws.data.ptr), ctypes.c_size_t(ws.nbytes)),
                   "cublasSetWorkspace")
            self.handles[dev], self.workspaces[dev] = h, ws
        _check(self.lib.cublasSetStream_v2(h, ctypes.c_void_p(self._cupy.cuda.get_current_stream().ptr)),
               "cublasSetStream")
        return h


def _open_loaded(stem: str) -> ctypes.CDLL:
    """The copy of a shared library this process has already loaded (found in /proc/self/maps),
    so our calls and CuPy's share one cuBLAS."""
    with open("/proc/self/maps") as f:
        paths = [ln.split()[-1] for ln in f if stem in ln and "/" in ln]
    for name in dict.fromkeys(paths + [f"{stem}.13", f"{stem}.12", stem]):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise OSError(f"cannot load {stem}")


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"{what} failed with cuBLAS status {status}")


@functools.cache
def _lib() -> _Cublas:
    return _Cublas()


def _cuda_type(x) -> int:
    if type(x) is TypedArray and x.dtype == BF16:
        return CUDA_R_16BF
    return {np.dtype(np.float32): CUDA_R_32F, np.dtype(np.float16): CUDA_R_16F}[np.dtype(x.dtype)]


def _layout(x):
    """(op, leading dimension) of a row-major [r, c] matrix view seen by column-major cuBLAS as its
    transpose, or None when neither axis is contiguous."""
    r, c = x.shape[-2:]
    sr, sc = (s // x.dtype.itemsize for s in x.strides[-2:])
    if sc == 1 or c == 1:
        return OP_N, max(sr, c, 1)
    if sr == 1 or r == 1:
        return OP_T, max(sc, r, 1)
    return None


def _raw(x):
    return x.array if type(x) is TypedArray else x


def _contiguous_matrix(x):
    """x as it is when cuBLAS can read it, else a C-contiguous copy."""
    if _layout(x) is not None and (x.ndim == 2 or x.strides[0] % x.dtype.itemsize == 0):
        return x
    a = _raw(x).copy()
    return TypedArray(a, x.dtype) if type(x) is TypedArray else a


def supports(a, b) -> bool:
    """Whether `gemm` takes these operands (2-D or 3-D, one dtype cuBLAS knows)."""
    try:
        same = _cuda_type(a) == _cuda_type(b)
    except KeyError:
        return False
    return same and a.ndim in (2, 3) and b.ndim in (2, 3) and (a.ndim == 2 or b.ndim == 2 or a.shape[0] == b.shape[0])


def gemm(a, b):
    """a @ b as a new C-contiguous array of a's kind and dtype (fp32 accumulation), on CuPy's
    current stream."""
    a, b = _contiguous_matrix(a), _contiguous_matrix(b)
    M, K = a.shape[-2:]
    N = b.shape[-1]
    Z = max(a.shape[0] if a.ndim == 3 else 1, b.shape[0] if b.ndim == 3 else 1)
    batched = a.ndim == 3 or b.ndim == 3
    c = empty((Z, M, N) if batched else (M, N), np.dtype(a.dtype), like=a)
    if M == 0 or N == 0:
        return c
    if K == 0:
        _raw(c).fill(0)
        return c
    (opa, lda), (opb, ldb) = _layout(a), _layout(b)
    ta, cb = _cuda_type(a), _lib()
    handle, lib = cb.handle(), cb.lib
    pa, pb, pc = (ctypes.c_void_p(_raw(x).data.ptr) for x in (a, b, c))
    one, zero = ctypes.c_void_p(_ONE.ctypes.data), ctypes.c_void_p(_ZERO.ctypes.data)
    if not batched:
        _check(lib.cublasGemmEx(handle, opb, opa, N, M, K, one, pb, ta, ldb, pa, ta, lda,
                                zero, pc, ta, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT), "cublasGemmEx")
        return c
    item = a.dtype.itemsize
    sa = a.strides[0] // item if a.ndim == 3 else 0
    sb = b.strides[0] // item if b.ndim == 3 else 0
    ll = ctypes.c_longlong
    _check(lib.cublasGemmStridedBatchedEx(handle, opb, opa, N, M, K, one, pb, ta, ldb, ll(sb), pa, ta, lda, ll(sa),
                                          zero, pc, ta, N, ll(M * N), Z, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
           "cublasGemmStridedBatchedEx")
    return c
