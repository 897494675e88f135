"""`tg.backends`: the flags PyTorch scripts set (`backends.cuda.matmul.allow_tf32 = True`,
`backends.cudnn.benchmark = True`, ...), accepted and kept so scripts run unchanged.

They do not change tracegrad's kernels: matmuls follow the dtype (fp32 stays fp32) and there is
no cuDNN. `backends.mps.is_available()` is False: tracegrad has no Apple-GPU backend.
"""
from __future__ import annotations

import contextlib

from . import cuda as _cuda


class _Flags:
    def __init__(self, **flags):
        self.__dict__.update(flags)

    def __repr__(self):
        return f"<flags {self.__dict__}>"


class cuda:  # noqa: N801
    matmul = _Flags(allow_tf32=False, allow_fp16_reduced_precision_reduction=True,
                    allow_bf16_reduced_precision_reduction=True)

    @staticmethod
    def is_built() -> bool:
        return _cuda.is_available()

    _sdp = {"flash": True, "mem_efficient": True, "math": True, "cudnn": True}

    @staticmethod
    def enable_flash_sdp(enabled: bool) -> None:
        cuda._sdp["flash"] = bool(enabled)

    @staticmethod
    def enable_mem_efficient_sdp(enabled: bool) -> None:
        cuda._sdp["mem_efficient"] = bool(enabled)

    @staticmethod
    def enable_math_sdp(enabled: bool) -> None:
        cuda._sdp["math"] = bool(enabled)

    @staticmethod
    def flash_sdp_enabled() -> bool:
        return cuda._sdp["flash"]

    @staticmethod
    @contextlib.contextmanager
    def sdp_kernel(enable_flash=True, enable_math=True, enable_mem_efficient=True, enable_cudnn=True):
        yield


class _Cudnn(_Flags):
    def is_available(self) -> bool:
        return False

    def version(self):
        return None


cudnn = _Cudnn(enabled=True, benchmark=False, deterministic=False, allow_tf32=True)


class mps:  # noqa: N801
    @staticmethod
    def is_available() -> bool:
        return False

    @staticmethod
    def is_built() -> bool:
        return False


class mkldnn:  # noqa: N801
    enabled = True

    @staticmethod
    def is_available() -> bool:
        return False


class openmp:  # noqa: N801
    @staticmethod
    def is_available() -> bool:
        return False
