"""Tensor's conversion, selection and reduction methods: the mixin `TensorMethods`, which
`Tensor` inherits, so every method has a signature and a docstring for `help()` and editors (the
shape methods come from `tensor_shape.TensorShape`; the elementwise math, in-place forms and
operators from `tensor_math.TensorMath`).

Each is a line or two over `functions` and `apply`; the names and arguments are PyTorch's.
Nothing here imports `tensor.py` (which imports this module): a method finds the class it
builds through `type(self)`.
"""
from __future__ import annotations

import math

from . import functions as F_, indexing, trace as _trace
from .creation import full, normalize_device, tensor
from .dispatch import apply
from .errors import UnsupportedError
from .runtime.devices import transfer
from .surface import missing
from .tensor_shape import TensorShape, _sizes
from .ir.types import bfloat16, bool_, dtype as to_dtype, float16, float32, float64, int32, int64


class TensorMethods(TensorShape):
    """The methods and operators of `Tensor` that compute new tensors."""
    __slots__ = ()

    # -- conversion ---------------------------------------------------------------------------
    def to(self, *args, dtype=None, device=None, non_blocking=False, copy=False):
        """This tensor in another dtype and/or on another device: `t.to(tg.bfloat16)`,
        `t.to("cuda")`, `t.to(other)` (other's dtype and device). Returns self when nothing changes."""
        for a in args:
            if isinstance(a, TensorMethods):
                dtype, device = a.dtype, a.device
            elif isinstance(a, str) and a.split(":")[0] in ("cpu", "cuda", "mps", "xpu", "meta"):
                device = a
            elif a is not None:
                dtype = a
        out = self
        if dtype is not None and to_dtype(dtype) != self.dtype:
            out = apply("cast", out, dtype=to_dtype(dtype))
        if device is not None and normalize_device(device) != self._type.device:
            if out._trace is not None or _trace.current() is not None:
                raise UnsupportedError("moving tensors between devices inside @tg.compile is not supported; "
                                       "move inputs before calling the step")
            dev = normalize_device(device)
            moved = type(self)._from_array(transfer(out._data, dev), out._type.with_(device=dev))
            moved.requires_grad = out.requires_grad
            out = moved
        return out

    def cuda(self, device=None):
        """This tensor on a GPU (`cuda:device`, default the current one)."""
        return self.to(f"cuda:{device}" if isinstance(device, int) else (device or "cuda"))

    def cpu(self):
        """This tensor on the CPU."""
        return self.to("cpu")

    def type_as(self, other):
        """This tensor in `other`'s dtype."""
        return self.to(other.dtype)

    def float(self):
        """This tensor as float32."""
        return self.to(float32)

    def double(self):
        """This tensor as float64."""
        return self.to(float64)

    def half(self):
        """This tensor as float16."""
        return self.to(float16)

    def bfloat16(self):
        """This tensor as bfloat16."""
        return self.to(bfloat16)

    def long(self):
        """This tensor as int64."""
        return self.to(int64)

    def int(self):
        """This tensor as int32."""
        return self.to(int32)

    def bool(self):
        """This tensor as bool."""
        return self.to(bool_)

    # -- selection ----------------------------------------------------------------------------
    def masked_fill(self, mask, value):
        """`value` where `mask` is True, this tensor elsewhere."""
        if isinstance(value, TensorMethods):
            return F_.where(mask, value.to(self.dtype), self)
        return F_.where(mask, F_.constant(value, F_.scalar_dtype(value, self.dtype), self._type.device).to(self.dtype),
                        self)

    def masked_fill_(self, mask, value):
        """In-place `masked_fill`."""
        return self._assign(self.masked_fill(mask, value))

    def gather(self, dim: int, index):
        """out[i][j] = self[index[i][j]][j] (for dim=0), as torch.gather."""
        return indexing.gather(self, F_.wrap_dim(dim, self.ndim), index)

    def scatter_add(self, dim: int, index, src):
        """This tensor plus `src` added at the places `index` names along `dim`."""
        return indexing.scatter_add(self, F_.wrap_dim(dim, self.ndim), index, src)

    def index_select(self, dim: int, index):
        """The entries of `index` along `dim`."""
        return apply("take", self, index, axis=F_.wrap_dim(dim, self.ndim))

    def where(self, condition, other):
        """This tensor where `condition` holds, `other` elsewhere."""
        return F_.where(condition, self, other)

    # -- reductions and normalizations --------------------------------------------------------
    def softmax(self, dim: int = -1, dtype=None):
        """exp(x) / sum(exp(x)) along `dim`."""
        x = self.to(dtype) if dtype is not None else self
        return apply("softmax", x if x.dtype.is_floating else x.float(), axis=F_.wrap_dim(dim, x.ndim))

    def log_softmax(self, dim: int = -1, dtype=None):
        """log(softmax(x)) along `dim`, computed stably."""
        x = self.to(dtype) if dtype is not None else self
        return apply("log_softmax", x if x.dtype.is_floating else x.float(), axis=F_.wrap_dim(dim, x.ndim))

    def sum(self, dim=None, keepdim: bool = False, *, dtype=None):
        """The sum over `dim` (all axes by default)."""
        return F_.sum(self, dim, keepdim, dtype=dtype)

    def mean(self, dim=None, keepdim: bool = False, *, dtype=None):
        """The mean over `dim` (all axes by default)."""
        return F_.mean(self, dim, keepdim, dtype=dtype)

    def var(self, dim=None, unbiased=None, keepdim: bool = False, *, correction=None):
        """The variance over `dim` (Bessel's correction unless unbiased=False or correction=0)."""
        return F_.var(self, dim, unbiased, keepdim, correction=correction)

    def std(self, dim=None, unbiased=None, keepdim: bool = False, *, correction=None):
        """The standard deviation over `dim`."""
        return F_.std(self, dim, unbiased, keepdim, correction=correction)

    def max(self, dim=None, keepdim: bool = False):
        """The maximum; with `dim`, (values, indices); with a tensor, the elementwise maximum."""
        return F_.max(self, dim, keepdim)

    def min(self, dim=None, keepdim: bool = False):
        """The minimum; with `dim`, (values, indices); with a tensor, the elementwise minimum."""
        return F_.min(self, dim, keepdim)

    def amax(self, dim=None, keepdim: bool = False):
        """The maximum over `dim`."""
        return F_.amax(self, dim, keepdim)

    def amin(self, dim=None, keepdim: bool = False):
        """The minimum over `dim`."""
        return F_.amin(self, dim, keepdim)

    def argmax(self, dim=None, keepdim: bool = False):
        """The index of the maximum (over the flattened tensor without `dim`)."""
        return F_.argmax(self, dim, keepdim)

    def argmin(self, dim=None, keepdim: bool = False):
        """The index of the minimum (over the flattened tensor without `dim`)."""
        return F_.argmin(self, dim, keepdim)

    def logsumexp(self, dim, keepdim: bool = False):
        """log(sum(exp(x))) over `dim`, computed stably."""
        return F_.logsumexp(self, dim, keepdim)

    def all(self, dim=None, keepdim=False):
        """True where every element (over `dim`) is nonzero."""
        return F_.all(self, dim, keepdim)

    def any(self, dim=None, keepdim=False):
        """True where some element (over `dim`) is nonzero."""
        return F_.any(self, dim, keepdim)

    def norm(self, p=2, dim=None, keepdim=False):
        """The p-norm over `dim` (all axes by default)."""
        if p == 2:
            return F_.safe_sqrt(F_.sum(self * self, dim, keepdim))
        if p == 1:
            return F_.sum(self.abs(), dim, keepdim)
        return F_.safe_root(F_.sum(self.abs() ** p, dim, keepdim), p)

    # -- description: formatting, strides, pinning -------------------------------------------
    # NOTE: tensors are values laid out row-major, so strides are those of the shape and every
    # tensor is contiguous.
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

    def pin_memory(self, device=None):
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
        raise missing("Tensor", name, lambda: [n for n in dir(type(self)) if not n.startswith("_")])

    # -- new tensors like this one ------------------------------------------------------------
    def zeros_like(self):
        """Zeros of this tensor's shape, dtype and device (a broadcast constant)."""
        return F_.constant(0, self.dtype, self._type.device).expand(*self.shape)

    def new_zeros(self, *size, dtype=None):
        """Zeros of `size`, in this tensor's dtype (or `dtype`) and on its device."""
        return self.new_full(_sizes(size), 0, dtype=dtype)

    def new_ones(self, *size, dtype=None):
        """Ones of `size`, in this tensor's dtype (or `dtype`) and on its device."""
        return self.new_full(_sizes(size), 1, dtype=dtype)

    def new_full(self, size, fill_value, dtype=None):
        """`fill_value` everywhere in a tensor of `size`, this tensor's dtype and device."""
        return full(_sizes((size,)), fill_value, dtype=dtype or self.dtype, device=self._type.device)

    def new_tensor(self, data, dtype=None):
        """A tensor of `data` in this tensor's dtype (or `dtype`) and on its device."""
        return tensor(data, dtype=dtype or self.dtype, device=self._type.device)
