"""Tensor methods that describe a tensor rather than compute: formatting, strides, pinning.

    f"{loss:.4f}"            # a 0-d tensor formats as its number, as in PyTorch
    x.stride(), x.is_contiguous(), x.pin_memory()

tracegrad's tensors are values, not views into shared storage: every tensor is laid out
row-major (C-contiguous), so `stride()` is the row-major stride of its shape and
`is_contiguous()` is True.
"""
from __future__ import annotations

from .surface import missing
from .tensor import Tensor


def __format__(self, spec: str) -> str:
    """A 0-d tensor formats as its Python number; any tensor formats with an empty spec (as PyTorch)."""
    if self.ndim == 0:
        return format(self.item(), spec)
    if not spec:
        return str(self)
    raise TypeError(f"unsupported format string {spec!r} for a tensor of shape {list(self.shape)}; "
                    "format one element (t.item()) or use str(t)")


def stride(self, dim: int | None = None):
    """Elements to step over per index of each dimension (row-major)."""
    out, acc = [], 1
    for s in reversed(self.shape):
        out.append(acc)
        acc *= max(s, 1)
    out = tuple(reversed(out))
    return out if dim is None else out[dim]


def is_contiguous(self, memory_format=None) -> bool:
    """True: every tracegrad tensor is row-major."""
    return True


def pin_memory(self, device=None) -> Tensor:
    """The tensor itself: host-to-device copies go through CuPy, which needs no pinned buffer here."""
    return self


def is_pinned(self, device=None) -> bool:
    """False: nothing is pinned (see pin_memory)."""
    return False


def storage_offset(self) -> int:
    """0: a tensor owns its buffer from the start."""
    return 0


def get_device(self) -> int:
    """The CUDA device index, or -1 on the CPU (as PyTorch)."""
    d = self._type.device
    return int(d.split(":")[1]) if d.startswith("cuda") else -1


def type(self, dtype=None):
    """The type name ('torch.FloatTensor' style) or, given a dtype, the tensor cast to it."""
    if dtype is None:
        names = {"float32": "Float", "float64": "Double", "float16": "Half", "bfloat16": "BFloat16",
                 "int64": "Long", "int32": "Int", "int16": "Short", "int8": "Char", "uint8": "Byte", "bool": "Bool"}
        prefix = "torch.cuda." if self._type.device.startswith("cuda") else "torch."
        return f"{prefix}{names.get(self.dtype.name, self.dtype.name)}Tensor"
    return self.to(dtype)


def __getattr__(self, name: str):
    """Only reached for a name Tensor does not have: say so, with the nearest method names."""
    if name.startswith("_"):
        raise AttributeError(f"'Tensor' object has no attribute {name!r}")
    raise missing("Tensor", name, lambda: [n for n in dir(Tensor) if not n.startswith("_")])


for _fn in (__getattr__, __format__, stride, is_contiguous, pin_memory, is_pinned, storage_offset, get_device, type):
    setattr(Tensor, _fn.__name__, _fn)
del _fn
