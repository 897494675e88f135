"""Tensor's math and shape methods and operators, attached to the class in one table.

Each is a line or two over `functions` and `apply`; the names and arguments are PyTorch's.
"""
from __future__ import annotations

import math

from . import functions as F_, indexing, trace as _trace
from .creation import normalize_device
from .dispatch import apply
from .errors import UnsupportedError
from .ir.types import bool_, dtype as to_dtype, int64
from .tensor import Tensor


# -- conversion -------------------------------------------------------------------------------
def to(self, *args, dtype=None, device=None, non_blocking=False, copy=False):
    for a in args:
        if isinstance(a, Tensor):
            dtype, device = a.dtype, a.device
        elif isinstance(a, str) and (a in ("cpu", "cuda") or a.startswith("cuda:")):
            device = a
        elif a is not None:
            dtype = a
    out = self
    if dtype is not None and to_dtype(dtype) != self.dtype:
        out = apply("cast", out, dtype=to_dtype(dtype))
    if device is not None and normalize_device(device) != self._type.device:
        from .runtime.devices import transfer
        if out._trace is not None or _trace.current() is not None:
            raise UnsupportedError("moving tensors between devices inside @tg.compile is not supported; "
                                   "move inputs before calling the step")
        dev = normalize_device(device)
        moved = Tensor._from_array(transfer(out._data, dev), out._type.with_(device=dev))
        moved.requires_grad = out.requires_grad
        out = moved
    return out


def _cuda(self, device=None):
    return self.to(f"cuda:{device}" if isinstance(device, int) else (device or "cuda"))


# -- shape ------------------------------------------------------------------------------------
def _sizes(args) -> tuple:
    return tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else tuple(args)


def reshape(self, *shape):
    shape = list(_sizes(shape))
    if shape.count(-1) > 1:
        raise ValueError("only one dimension can be -1")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or self.numel() % known:
            raise RuntimeError(f"shape {shape} is invalid for input of size {self.numel()}")
        shape[shape.index(-1)] = self.numel() // known
    shape = tuple(shape)
    if shape == self.shape:
        return self
    out = apply("reshape", self, shape=shape)
    # a view: in-place updates reach self (see Tensor._assign)
    out._view = (self, lambda new: reshape(new, *self.shape), lambda: apply("reshape", self, shape=shape))
    return out


def permute(self, *dims):
    dims = tuple(F_.wrap_dim(d, self.ndim) for d in _sizes(dims))
    if dims == tuple(range(self.ndim)):
        return self
    out = apply("permute", self, dims=dims)
    out._view = (self, lambda new: permute(new, *sorted(range(len(dims)), key=dims.__getitem__)),
                 lambda: apply("permute", self, dims=dims))
    return out


def transpose(self, d0: int, d1: int):
    dims = list(range(self.ndim))
    d0, d1 = F_.wrap_dim(d0, self.ndim), F_.wrap_dim(d1, self.ndim)
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return permute(self, *dims)


def unsqueeze(self, dim: int):
    dim = F_.wrap_dim(dim, self.ndim + 1)
    return reshape(self, *self.shape[:dim], 1, *self.shape[dim:])


def squeeze(self, dim=None):
    if dim is None:
        return reshape(self, *[s for s in self.shape if s != 1])
    dims = {F_.wrap_dim(d, self.ndim) for d in ((dim,) if isinstance(dim, int) else dim)}
    return reshape(self, *[s for i, s in enumerate(self.shape) if not (i in dims and s == 1)])


def flatten(self, start_dim: int = 0, end_dim: int = -1):
    if self.ndim == 0:
        return reshape(self, 1)
    s, e = F_.wrap_dim(start_dim, self.ndim), F_.wrap_dim(end_dim, self.ndim)
    return reshape(self, *self.shape[:s], math.prod(self.shape[s:e + 1]), *self.shape[e + 1:])


def expand(self, *sizes):
    sizes = _sizes(sizes)
    lead = len(sizes) - self.ndim
    shape = tuple(self.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes))
    return self if shape == self.shape else apply("expand", self, shape=shape)


def repeat(self, *reps):
    reps = _sizes(reps)
    x = reshape(self, *([1] * (len(reps) - self.ndim)), *self.shape)
    inter = []
    for s, r in zip(x.shape, reps):
        inter += [1, s]
    x = reshape(x, *inter)
    x = expand(x, *[v for s, r in zip(x.shape[1::2], reps) for v in (r, s)])
    return reshape(x, *[s * r for s, r in zip(x.shape[1::2], reps)])


def split(self, split_size, dim: int = 0):
    dim = F_.wrap_dim(dim, self.ndim)
    n = self.shape[dim]
    sizes = [split_size] * (n // split_size) + ([n % split_size] if n % split_size else []) \
        if isinstance(split_size, int) else list(split_size)
    out, at = [], 0
    for s in sizes:
        idx = [slice(None)] * self.ndim
        idx[dim] = slice(at, at + s)
        out.append(self[tuple(idx)])
        at += s
    return tuple(out)


def chunk(self, chunks: int, dim: int = 0):
    n = self.shape[F_.wrap_dim(dim, self.ndim)]
    return split(self, -(-n // chunks), dim)


def unbind(self, dim: int = 0):
    return tuple(t.squeeze(dim) for t in split(self, 1, dim))


def tril(self, diagonal: int = 0):
    return _tri(self, diagonal, lower=True)


def triu(self, diagonal: int = 0):
    return _tri(self, diagonal, lower=False)


def _tri(x, k, lower):
    r, c = x.shape[-2:]
    dev = x._type.device
    rows = apply("iota", shape=(r, c), axis=0, dtype=int64, device=dev)
    cols = apply("iota", shape=(r, c), axis=1, dtype=int64, device=dev)
    keep = (cols - rows <= k) if lower else (cols - rows >= k)
    return F_.where(keep, x, F_.constant(False if x.dtype == bool_ else 0, x.dtype, dev))


def masked_fill(self, mask, value):
    if isinstance(value, Tensor):
        return F_.where(mask, value.to(self.dtype), self)
    return F_.where(mask, F_.constant(value, F_.scalar_dtype(value, self.dtype), self._type.device).to(self.dtype),
                    self)


def gather(self, dim: int, index):
    return indexing.gather(self, F_.wrap_dim(dim, self.ndim), index)


def scatter_add(self, dim: int, index, src):
    return indexing.scatter_add(self, F_.wrap_dim(dim, self.ndim), index, src)


def index_select(self, dim: int, index):
    return apply("take", self, index, axis=F_.wrap_dim(dim, self.ndim))


def softmax(self, dim: int = -1, dtype=None):
    x = self.to(dtype) if dtype is not None else self
    return apply("softmax", x if x.dtype.is_floating else x.float(), axis=F_.wrap_dim(dim, x.ndim))


def log_softmax(self, dim: int = -1, dtype=None):
    x = self.to(dtype) if dtype is not None else self
    return apply("log_softmax", x if x.dtype.is_floating else x.float(), axis=F_.wrap_dim(dim, x.ndim))


def _inplace(fn):
    def method(self, *args, **kwargs):
        return self._assign(fn(self, *args, **kwargs))
    return method


def _scaled(fn):
    def op(self, other, *, alpha=1):
        return fn(self, other * alpha if alpha != 1 else other)
    return op


def addcmul(self, t1, t2, *, value=1):
    return self + t1 * t2 * value if value != 1 else self + t1 * t2


def addcdiv(self, t1, t2, *, value=1):
    return self + t1 / t2 * value if value != 1 else self + t1 / t2


def lerp(self, end, weight):
    return self + (end - self) * weight


def _normal(self, mean=0.0, std=1.0):
    from .random import randn
    return randn(*self.shape, dtype=self.dtype, device=self._type.device) * std + mean


def _uniform(self, a=0.0, b=1.0):
    from .random import rand
    return rand(*self.shape, dtype=self.dtype, device=self._type.device) * (b - a) + a


def norm(self, p=2, dim=None, keepdim=False):
    if p == 2:
        return F_.safe_sqrt(F_.sum(self * self, dim, keepdim))
    if p == 1:
        return F_.sum(self.abs(), dim, keepdim)
    return F_.safe_root(F_.sum(self.abs() ** p, dim, keepdim), p)


def _rbinary(op):
    return lambda self, other: F_.binary(op, other, self)


METHODS = dict(
    to=to, cuda=_cuda, cpu=lambda self: self.to("cpu"), type_as=lambda self, o: self.to(o.dtype),
    reshape=reshape, view=reshape, view_as=lambda self, o: reshape(self, *o.shape),
    reshape_as=lambda self, o: reshape(self, *o.shape),
    permute=permute, transpose=transpose, t=lambda self: transpose(self, 0, 1) if self.ndim == 2 else self,
    T=property(lambda self: permute(self, *reversed(range(self.ndim)))),
    mT=property(lambda self: transpose(self, -2, -1)),
    contiguous=lambda self, memory_format=None: self, clone=lambda self, memory_format=None: self + 0 if
    self.dtype != bool_ else self.to(int64).to(bool_),
    unsqueeze=unsqueeze, squeeze=squeeze, flatten=flatten, expand=expand,
    expand_as=lambda self, o: expand(self, *o.shape), broadcast_to=expand, repeat=repeat,
    split=split, chunk=chunk, unbind=unbind, tril=tril, triu=triu,
    masked_fill=masked_fill, masked_fill_=_inplace(masked_fill), gather=gather, scatter_add=scatter_add,
    index_select=index_select, softmax=softmax, log_softmax=log_softmax,
    sum=F_.sum, mean=F_.mean, var=F_.var, std=F_.std, max=F_.max, min=F_.min, amax=F_.amax, amin=F_.amin,
    argmax=F_.argmax, argmin=F_.argmin, logsumexp=F_.logsumexp, all=F_.all, any=F_.any, norm=norm,
    matmul=F_.matmul, __matmul__=F_.matmul, __rmatmul__=lambda self, o: F_.matmul(o, self),
    __add__=lambda self, o: F_.binary("add", self, o), __radd__=_rbinary("add"),
    __sub__=lambda self, o: F_.binary("sub", self, o), __rsub__=_rbinary("sub"),
    __mul__=lambda self, o: F_.binary("mul", self, o), __rmul__=_rbinary("mul"),
    __truediv__=F_.true_divide, __rtruediv__=lambda self, o: F_.true_divide(o, self),
    __floordiv__=F_.floor_divide, __rfloordiv__=lambda self, o: F_.floor_divide(o, self),
    __mod__=lambda self, o: F_.binary("mod", self, o),
    __pow__=lambda self, o: F_.binary("pow", self, o) if self.dtype.is_floating or isinstance(o, Tensor)
    else F_.binary("pow", self.float(), o), __rpow__=_rbinary("pow"),
    __neg__=lambda self: F_.unary("neg", self), __pos__=lambda self: self, __abs__=lambda self: F_.unary("abs", self),
    __invert__=lambda self: F_.unary("logical_not", self.to(bool_)),
    __and__=lambda self, o: F_.binary("logical_and", self.to(bool_), o.to(bool_)),
    __or__=lambda self, o: F_.binary("logical_or", self.to(bool_), o.to(bool_)),
    __eq__=lambda self, o: F_.binary("eq", self, o), __ne__=lambda self, o: F_.binary("ne", self, o),
    __lt__=lambda self, o: F_.binary("lt", self, o), __le__=lambda self, o: F_.binary("le", self, o),
    __gt__=lambda self, o: F_.binary("gt", self, o), __ge__=lambda self, o: F_.binary("ge", self, o),
    eq=lambda self, o: F_.binary("eq", self, o), ne=lambda self, o: F_.binary("ne", self, o),
    lt=lambda self, o: F_.binary("lt", self, o), gt=lambda self, o: F_.binary("gt", self, o),
    add=_scaled(lambda self, o: F_.binary("add", self, o)), sub=_scaled(lambda self, o: F_.binary("sub", self, o)),
    mul=lambda self, o: F_.binary("mul", self, o), div=F_.true_divide, pow=lambda self, o: self ** o,
    maximum=lambda self, o: F_.binary("maximum", self, o), minimum=lambda self, o: F_.binary("minimum", self, o),
    where=lambda self, cond, other: F_.where(cond, self, other), clamp=F_.clamp, clip=F_.clamp,
    addcmul=addcmul, addcdiv=addcdiv, lerp=lerp,
    zeros_like=lambda self: F_.constant(0, self.dtype, self._type.device).expand(*self.shape),
    new_zeros=lambda self, *s, dtype=None: _new(self, s, 0, dtype), new_ones=lambda self, *s, dtype=None: _new(self, s, 1, dtype),
    new_full=lambda self, s, v, dtype=None: _new(self, s, v, dtype), new_tensor=lambda self, d, dtype=None: _new_tensor(self, d, dtype),
    normal_=_inplace(_normal), uniform_=_inplace(_uniform),
)
for _name in ("exp", "log", "sqrt", "rsqrt", "tanh", "sin", "cos", "abs", "sign", "sigmoid", "erf", "reciprocal",
              "neg", "floor", "isnan", "logical_not"):
    METHODS[_name] = (lambda op: lambda self: F_.unary(op, self))(_name)
METHODS["relu"] = lambda self: apply("relu", self)
METHODS["square"] = lambda self: self * self
METHODS["exp2"] = lambda self: (self * math.log(2.0)).exp()
METHODS["log2"] = lambda self: self.log() * (1.0 / math.log(2.0))
for _name in ("add", "sub", "mul", "div", "clamp", "pow", "addcmul", "addcdiv", "lerp", "neg", "exp", "sqrt",
              "tanh", "sigmoid", "relu", "abs", "maximum", "minimum"):
    METHODS[_name + "_"] = _inplace(METHODS[_name])
for _op, _name in (("add", "__iadd__"), ("sub", "__isub__"), ("mul", "__imul__"), ("div", "__itruediv__")):
    METHODS[_name] = METHODS[_op + "_"]


def _new(self, size, value, dtype):
    from .creation import full
    return full(_sizes(size), value, dtype=dtype or self.dtype, device=self._type.device)


def _new_tensor(self, data, dtype):
    from .creation import tensor
    return tensor(data, dtype=dtype or self.dtype, device=self._type.device)


for _name, _fn in METHODS.items():
    setattr(Tensor, _name, _fn)
