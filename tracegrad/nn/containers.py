"""Containers: `Sequential`, `ModuleList`, `ModuleDict` (PyTorch's semantics and reprs)."""
from __future__ import annotations

from collections import OrderedDict

from .module import Module


def _repr_children(self, items) -> str:
    """PyTorch's compact listing: runs of identical children print once, as `(0-3): 4 x Block(...)`."""
    lines, items = [], list(items)
    i = 0
    while i < len(items):
        name, m = items[i]
        r = repr(m)
        j = i + 1
        while j < len(items) and repr(items[j][1]) == r:
            j += 1
        label = f"({name}-{items[j - 1][0]}): {j - i} x " if j - i > 1 else f"({name}): "
        lines.append(label + r.replace("\n", "\n  "))
        i = j
    if not lines:
        return f"{self._get_name()}()"
    return f"{self._get_name()}(\n  " + "\n  ".join(lines) + "\n)"


class Sequential(Module):
    """Modules run one after the other: `Sequential(Linear(4, 8), ReLU(), Linear(8, 1))`."""

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], (dict, OrderedDict)):
            for name, m in args[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(args):
                self.add_module(str(i), m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        return list(self._modules.values())[_index(idx, len(self))]

    def __setitem__(self, idx: int, module: Module) -> None:
        self.add_module(list(self._modules)[_index(idx, len(self))], module)

    def __delitem__(self, idx) -> None:
        keys = list(self._modules)
        for k in (keys[idx] if isinstance(idx, slice) else [keys[_index(idx, len(self))]]):
            delattr(self, k)

    def append(self, module: Module) -> "Sequential":
        self.add_module(str(len(self)), module)
        return self

    def __repr__(self) -> str:
        return _repr_children(self, self._modules.items())


class ModuleList(Module):
    """A list of modules whose parameters the parent registers: `ModuleList([Block() for _ in range(4)])`."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ModuleList(list(self._modules.values())[idx])
        return self._modules[str(_index(idx, len(self)))]

    def __setitem__(self, idx: int, module: Module) -> None:
        self.add_module(str(_index(idx, len(self))), module)

    def __delitem__(self, idx) -> None:
        mods = list(self._modules.values())
        del mods[idx]
        self._renumber(mods)

    def __iadd__(self, modules) -> "ModuleList":
        return self.extend(modules)

    def __add__(self, other) -> "ModuleList":
        return ModuleList(list(self) + list(other))

    def append(self, module: Module) -> "ModuleList":
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> None:
        mods = list(self._modules.values())
        mods.insert(index, module)
        self._renumber(mods)

    def _renumber(self, mods: list) -> None:
        """Hold exactly `mods`, under the names 0, 1, ... (as after a list edit)."""
        for k in list(self._modules):
            delattr(self, k)
        self.extend(mods)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward(); iterate over it and call its modules")

    def __repr__(self) -> str:
        return _repr_children(self, self._modules.items())


class ModuleDict(Module):
    """A dict of modules: `ModuleDict(dict(wte=Embedding(65, 32), h=ModuleList(...)))`."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        delattr(self, key)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key: str) -> bool:
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def pop(self, key: str) -> Module:
        m = self._modules[key]
        delattr(self, key)
        return m

    def clear(self) -> None:
        for k in list(self._modules):
            delattr(self, k)

    def update(self, modules) -> None:
        for k, m in (modules.items() if hasattr(modules, "items") else modules):
            self.add_module(k, m)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict has no forward(); index it and call its modules")


def _index(idx: int, n: int) -> int:
    idx = int(idx)
    if not -n <= idx < n:
        raise IndexError(f"index {idx} is out of range")
    return idx % n
