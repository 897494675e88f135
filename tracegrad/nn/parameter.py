"""`Parameter`: a tensor that a `Module` registers as a parameter (requires_grad=True by default)."""
from __future__ import annotations

from .. import trace as _trace
from ..creation import tensor as _tensor
from ..errors import TracegradError
from ..tensor import Tensor


class Parameter(Tensor):
    """A tensor that a `Module` registers as a parameter: `requires_grad=True` by default."""

    def __init__(self, data=None, requires_grad: bool = True):
        if data is None:
            data = _tensor([])
        elif not isinstance(data, Tensor):
            data = _tensor(data)
        if _trace.current() is not None or data._trace is not None:
            raise TracegradError("nn.Parameter(...) inside @tg.compile: create parameters before the step")
        self._data, self._type, self._grad, self._node, self._trace, self._name, self._base = \
            data._data, data._type, None, None, None, "", None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, proto):
        return Parameter, (Tensor._from_array(self._data, self._type), self.requires_grad)
