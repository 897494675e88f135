"""`nn.ParameterList` and `nn.ParameterDict`: parameters held in a list or dict, registered under
their index or key so `parameters()`, `state_dict()` and `to()` see them."""
from __future__ import annotations

from ..tensor import Tensor
from .module import Module, Parameter


def _as_param(p):
    return p if isinstance(p, Parameter) or not isinstance(p, Tensor) else Parameter(p)


class ParameterList(Module):
    def __init__(self, values=None):
        super().__init__()
        self.__dict__["_size"] = 0
        for v in values or ():
            self.append(v)

    def append(self, value) -> "ParameterList":
        setattr(self, str(self._size), _as_param(value))
        self.__dict__["_size"] += 1
        return self

    def extend(self, values) -> "ParameterList":
        for v in values:
            self.append(v)
        return self

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ParameterList([self[i] for i in range(self._size)[idx]])
        if not -self._size <= idx < self._size:
            raise IndexError(f"index {idx} is out of range for a ParameterList of {self._size}")
        return getattr(self, str(idx % self._size))

    def __setitem__(self, idx: int, value) -> None:
        setattr(self, str(idx % self._size), _as_param(value))

    def __len__(self) -> int:
        return self._size

    def __iter__(self):
        return (self[i] for i in range(self._size))

    def __iadd__(self, values):
        return self.extend(values)

    def extra_repr(self) -> str:
        return "\n".join(f"({i}): Parameter containing: [{p.dtype.name} of size {list(p.shape)}]"
                         for i, p in enumerate(self))


class ParameterDict(Module):
    def __init__(self, parameters=None):
        super().__init__()
        self.__dict__["_keys"] = []
        if parameters is not None:
            self.update(parameters)

    def __setitem__(self, key: str, value) -> None:
        if key not in self._keys:
            self._keys.append(key)
        setattr(self, key, _as_param(value))

    def __getitem__(self, key: str):
        if key not in self._keys:
            raise KeyError(key)
        return getattr(self, key)

    def __delitem__(self, key: str) -> None:
        self._keys.remove(key)
        delattr(self, key)

    def __contains__(self, key) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self):
        return iter(list(self._keys))

    def keys(self):
        return list(self._keys)

    def values(self):
        return [self[k] for k in self._keys]

    def items(self):
        return [(k, self[k]) for k in self._keys]

    def update(self, parameters) -> None:
        items = parameters.items() if hasattr(parameters, "items") else parameters
        for k, v in items:
            self[k] = v
