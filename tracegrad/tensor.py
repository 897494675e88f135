"""`Tensor`: a typed handle on either a buffer (eager: numpy or CuPy) or an IR value (inside a
trace), with PyTorch's methods. Every method ends in `apply`, so eager and traced code agree.

In-place methods (`add_`, `copy_`, `t[i] = v`, `p.data = ...`) are functional updates: they
compute a new value and rebind it to this tensor (`_assign`), which a trace turns into a
write-back of the step.
"""
from __future__ import annotations

import math

import numpy as np

from . import functions as F_, indexing, trace as _trace
from .dispatch import apply, grad_enabled
from .errors import DataDependentError, Donated, TracegradError
from .runtime.devices import owned_copy, to_numpy
from .runtime.shards import Sharded
from .runtime.index_flags import check_pending
from .autograd import _tape, backward as _backward, no_grad
from .creation import full, normalize_device, tensor as _tensor_of
from .provenance import where
from .einsum import LinalgMethods
from .tensor_compare import CompareMethods
from .tensor_methods import TensorMethods
from .tensor_scan import ScanMethods
from .tensor_scatter import ScatterMethods
from .tensor_search import SearchMethods
from .ir.graph import Value
from .ir.types import DType, TensorType, bfloat16, bool_, float16, float32, float64, int32, int64


class Tensor(SearchMethods, ScanMethods, CompareMethods, ScatterMethods, LinalgMethods, TensorMethods):
    __slots__ = ("_data", "_type", "requires_grad", "_grad", "_node", "_trace", "_name", "_base", "__weakref__",
                 "__dict__")
    __hash__ = object.__hash__

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def _from_array(cls, data, type: TensorType) -> "Tensor":
        t = object.__new__(cls)
        t._data, t._type, t.requires_grad, t._grad, t._node, t._trace, t._name, t._base = \
            data, type, False, None, None, None, "", None
        return t

    @classmethod
    def _from_value(cls, v: Value, tr) -> "Tensor":
        t = cls._from_array(v, v.type)
        t._trace = tr
        return t

    def __init__(self, data=None, *args, **kwargs):
        src = _tensor_of(data if data is not None else [], **kwargs)
        self._data, self._type, self.requires_grad, self._grad, self._node, self._trace, self._name, self._base = \
            src._data, src._type, False, None, None, None, "", None

    # -- type information -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return Size(self._type.shape)

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self._type.shape[dim]

    @property
    def dtype(self) -> DType:
        return self._type.dtype

    @property
    def device(self):
        return Device(self._type.device)

    @property
    def ndim(self) -> int:
        return self._type.ndim

    def dim(self) -> int:
        return self._type.ndim

    def numel(self) -> int:
        return self._type.numel

    nelement = numel

    def element_size(self) -> int:
        return self._type.dtype.itemsize

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def is_cuda(self) -> bool:
        return self._type.device.startswith("cuda")

    def __len__(self) -> int:
        if not self.ndim:
            raise TypeError("len() of a 0-d tensor")
        return self._type.shape[0]

    # -- concrete values --------------------------------------------------------------------
    def _concrete(self, what: str):
        tr = _trace.current()
        if isinstance(self._data, Value) or tr is not None:
            raise DataDependentError(
                f"{what} needs the value of a tensor, but inside @tg.compile tensors are symbolic "
                f"(a traced {self._type}).\n  at {where()}\n"
                "Use tg.where(cond, a, b) for a data-dependent choice, or move this branch out of the step.")
        if type(self._data) is Donated:
            raise self._data.error()
        # NOTE: the user reads a value, a host sync anyway: now GPU steps report a bad index
        check_pending()
        if type(self._data) is Sharded:       # a block of a tensor-parallel plan: the whole, gathered
            return self._data.full()
        return self._data

    def numpy(self) -> np.ndarray:
        data = self._concrete(".numpy()")
        if not isinstance(data, np.ndarray):
            return to_numpy(data)
        return data

    def item(self):
        if self.numel() != 1:
            raise ValueError(f"a tensor with {self.numel()} elements cannot be converted to a Python scalar")
        self._concrete(".item()")
        return self.numpy().reshape(()).item()

    def tolist(self):
        self._concrete(".tolist()")
        return self.numpy().tolist()

    def __bool__(self):
        self._concrete("bool(tensor) (an `if`/`while` on a tensor)")
        return bool(self.item())

    def __int__(self):
        self._concrete("int(tensor)")
        return int(self.item())

    def __float__(self):
        self._concrete("float(tensor)")
        return float(self.item())

    def __index__(self):
        self._concrete("using a tensor as an index")
        return int(self.item())

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a.astype(dtype) if dtype is not None else a

    def __repr__(self) -> str:
        if isinstance(self._data, Value):
            return f"Tensor({self._data.name}: {self._type}, traced)"
        body = np.array2string(np.asarray(self.numpy(), dtype=np.float32 if self.dtype == bfloat16 else None),
                               separator=", ", precision=4, threshold=64, edgeitems=3)
        extras = []
        if self.dtype not in (float32, int64, bool_):
            extras.append(f"dtype={self.dtype!r}")
        if self._type.device != "cpu":
            extras.append(f"device='{self._type.device}'")
        if self.requires_grad:
            extras.append("requires_grad=True" if self._node is None else f"grad_fn=<{self._node.op}>")
        return f"tensor({body}{''.join(', ' + e for e in extras)})"

    # -- autograd ---------------------------------------------------------------------------
    @property
    def grad(self):
        tr = _trace.current()
        if tr is not None:
            tr.note_grad(self, self._grad)
        return self._grad

    @grad.setter
    def grad(self, g):
        tr = _trace.current()
        if tr is not None and self._trace is not tr:
            tr.set_grad(self, g)
        else:
            self._grad = g

    @property
    def grad_fn(self):
        return self._node

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and not self.dtype.is_floating:
            raise TracegradError(f"only floating-point tensors can require gradients, not {self.dtype.name}")
        self.requires_grad = requires_grad
        return self

    def backward(self, gradient=None, retain_graph=None, create_graph: bool = False, inputs=None) -> None:
        _backward(self, gradient, retain_graph, create_graph, inputs)

    def detach(self) -> "Tensor":
        tr = _trace.current()
        if tr is not None and self._trace is not tr:    # an outside tensor: detach its current value
            return Tensor._from_value(tr.value_of(self), tr)._stop_gradient()
        if tr is not None and self.dtype.is_floating:
            return self._stop_gradient()
        t = Tensor._from_array(self._data, self._type)
        t._trace = self._trace
        return t

    def _stop_gradient(self) -> "Tensor":
        # NOTE: in a trace, detach must be visible in the graph: a compiled function's outputs
        # may be differentiated later by the IR's autodiff, which sees only the graph.
        return apply("stop_gradient", self)

    def detach_(self) -> "Tensor":
        self._node, self.requires_grad = None, False
        return self

    def retain_grad(self) -> None:
        pass

    # -- in place ---------------------------------------------------------------------------
    def _assign(self, new: "Tensor") -> "Tensor":
        """Rebind this tensor to `new`'s value (an in-place update in PyTorch's terms)."""
        if new._type.shape != self._type.shape:
            new = new.broadcast_to(*self._type.shape)
        if new.dtype != self.dtype:
            new = new.to(self.dtype)
        if self._base is not None:          # `p.data.op_()` updates p, without history
            self._base._assign(new.detach())
            self._data = self._base._data
            return self
        view = self.__dict__.get("_view")
        if view is not None:                # a view (`a[0]`, `a.t()`): write through to its base
            base, to_base, from_base = view
            base._assign(to_base(new))
            # NOTE: then read back from the base: `new` now feeds the base's history, so taking it
            # over here would cut that link
            new = from_base()
        tracks = grad_enabled() and new.requires_grad
        if tracks and self.requires_grad and self._node is None:
            raise TracegradError("a leaf tensor that requires grad is used in an in-place operation; "
                                 "wrap the update in `with tg.no_grad():`")
        if tracks:
            _take_over(self, new)
        tr = _trace.current()
        if tr is not None:
            tr.assign(self, new)
        else:
            self._data = new._data
        return self

    @property
    def data(self) -> "Tensor":
        """A view without history; in-place ops on it update this tensor."""
        t = Tensor._from_array(self._data, self._type)
        t._trace, t._base = self._trace, self
        return t

    @data.setter
    def data(self, value: "Tensor") -> None:
        with no_grad():
            self._assign(value)

    def copy_(self, src) -> "Tensor":
        src = src if isinstance(src, Tensor) else F_.constant(src, self.dtype, self._type.device)
        self._assign(src.to(self.dtype, device=self._type.device))
        if _trace.current() is None:
            # NOTE: PyTorch's copy_ writes into this tensor's own storage; so do we, rather than
            # aliasing `src` (a transposed view would send later matmuls down another BLAS path).
            owner = self if self._base is None else self._base
            owner._data = owned_copy(owner._data)
            self._data = owner._data
        return self

    def zero_(self) -> "Tensor":
        return self.fill_(0)

    def fill_(self, value) -> "Tensor":
        if isinstance(value, Tensor):
            return self._assign(value.reshape(()).broadcast_to(*self.shape))
        return self._assign(full(self.shape, value, dtype=self.dtype, device=self._type.device))

    def __setitem__(self, key, value) -> None:
        indexing.setitem(self, key, value)

    def __getitem__(self, key) -> "Tensor":
        return indexing.getitem(self, key)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def _take_over(t: Tensor, new: Tensor) -> None:
    """t becomes the output of new's node; its old value lives on as a separate tensor, so the
    history (keyed by tensor identity) stays a DAG."""
    old = Tensor._from_array(t._data, t._type)
    old._trace, old._node, old.requires_grad = t._trace, t._node, t.requires_grad
    if t._node is not None:
        t._node.outputs = tuple(old if o is t else o for o in t._node.outputs)
    for n in _tape([new]):
        if any(x is t for x in n.inputs):
            n.inputs = tuple(old if x is t else x for x in n.inputs)
    t._node, t.requires_grad = new._node, True
    new._node.outputs = tuple(t if o is new else o for o in new._node.outputs)


class Size(tuple):
    def numel(self) -> int:
        return math.prod(self)

    def __repr__(self) -> str:
        return f"tracegrad.Size({list(self)})"


class Device(str):
    """A device name that also answers `.type` and `.index` like torch.device."""

    def __new__(cls, name: str):
        return super().__new__(cls, name)

    @property
    def type(self) -> str:
        return self.split(":")[0]

    @property
    def index(self):
        return int(self.split(":")[1]) if ":" in self else None


def device(name: str) -> Device:
    return Device(normalize_device(name))
