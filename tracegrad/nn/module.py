"""`Module`, the base class of layers, as in PyTorch (`Parameter` lives in parameter.py, the state
dict in module_state.py).

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 8)
            self.register_buffer("scale", tg.ones(8))
        def forward(self, x):
            return self.fc(x).relu() * self.scale

    m = MLP(); [n for n, _ in m.named_parameters()]   # ['fc.weight', 'fc.bias']

Calling a module runs `forward` inside `provenance.module_scope(path)`, where `path` is the
module's dotted name under the outermost module being called (`blocks.3.attn`), so every op
recorded in a compiled step says which module made it. When a step is traced, parameters and
buffers are also named after their path (`blocks_3_attn_c_attn_weight`) for the IR dumps.
"""
from __future__ import annotations

import itertools
import threading
from collections import OrderedDict

from .. import provenance, trace as _trace
from ..creation import zeros_like
from ..errors import TracegradError
from ..ir import types as _types
from ..tensor import Tensor
from .module_state import ModuleState
from .parameter import Parameter

_version = [0]   # bumped whenever any module gains or loses a submodule (invalidates path caches)


def _bump() -> None:
    _version[0] += 1


class Module(ModuleState):
    """Base class of all layers; subclasses define `forward`."""

    training: bool
    _version: int = -1

    def __init__(self, *args, **kwargs) -> None:
        if args or kwargs:
            raise TypeError(f"{type(self).__name__}.__init__() got unexpected arguments")
        d = self.__dict__
        d["training"] = True
        d["_parameters"] = OrderedDict()
        d["_buffers"] = OrderedDict()
        d["_non_persistent_buffers_set"] = set()
        d["_modules"] = OrderedDict()

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"Module [{type(self).__name__}] is missing the required \"forward\" function")

    # -- calling ----------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        roots = _roots()
        if not roots:
            return self._call_as_root(roots, args, kwargs)
        path = roots[-1]._paths().get(id(self))
        if path is None:   # not a descendant of the outer module: name it by its class
            outer = provenance.module_path()
            path = f"{outer}.{type(self).__name__}" if outer else type(self).__name__
        with provenance.module_scope(path):
            return self.forward(*args, **kwargs)

    def _call_as_root(self, roots, args, kwargs):
        tr = _trace.current()
        if tr is not None:
            self._name_tensors()
            add_guard = getattr(tr, "add_guard", None)   # NOTE: needs Trace.add_guard (see the issue report)
            if add_guard is not None:
                flags = [(m, m.training) for m in self.modules()]
                add_guard(lambda: all(m.training == t for m, t in flags),
                          f"{type(self).__name__}.train()/eval() changed a module's training flag")
        roots.append(self)
        try:
            return self.forward(*args, **kwargs)
        finally:
            roots.pop()

    def _paths(self) -> dict[int, str]:
        """id(submodule) -> its dotted path under self (cached until the module tree changes)."""
        cache = self.__dict__.get("_path_cache")
        # NOTE: keyed by id(self) too: a deepcopy copies the cache, whose ids are the original's
        if cache is None or cache[0] != (_version[0], id(self)):
            cache = ((_version[0], id(self)), {id(m): name for name, m in self.named_modules()})
            self.__dict__["_path_cache"] = cache
        return cache[1]

    def _name_tensors(self) -> None:
        """Name parameters and buffers after their path, for IR dumps: blocks.0.ln_1.weight ->
        blocks_0_ln_1_weight. A tensor keeps the most qualified path it was seen under, so calling
        a submodule on its own does not rename the model's weights to `weight`."""
        for name, t in itertools.chain(self.named_parameters(), self.named_buffers()):
            depth = name.count(".") + 1
            if not t._name or depth >= t.__dict__.get("_path_depth", 0):
                t._name = name.replace(".", "_")
                t.__dict__["_path_depth"] = depth

    # -- attributes -------------------------------------------------------------------------
    def __setattr__(self, name: str, value) -> None:
        d = self.__dict__
        params, buffers, modules = d.get("_parameters"), d.get("_buffers"), d.get("_modules")
        if params is None and isinstance(value, (Parameter, Module)):
            raise AttributeError(f"cannot assign {type(value).__name__} before Module.__init__() call")
        if isinstance(value, Parameter):
            self._drop(name)
            params[name] = value
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                "(nn.Parameter or None expected)")
            params[name] = None
        elif isinstance(value, Module):
            self._drop(name)
            modules[name] = value
            _bump()
        elif modules is not None and name in modules:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module '{name}' "
                                "(nn.Module or None expected)")
            modules[name] = None
            _bump()
        elif buffers is not None and name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' (Tensor or None expected)")
            buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _drop(self, name: str) -> None:
        for store in ("_parameters", "_buffers", "_modules"):
            self.__dict__[store].pop(name, None)
        self.__dict__.pop(name, None)
        self._non_persistent_buffers_set.discard(name)

    def __getattr__(self, name: str):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            s = d.get(store)
            if s is not None and name in s:
                return s[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for store in ("_parameters", "_buffers", "_modules"):
            if name in self.__dict__[store]:
                del self.__dict__[store][name]
                self._non_persistent_buffers_set.discard(name)
                if store == "_modules":
                    _bump()
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if "." in name or not name:
            raise KeyError(f"parameter name can't contain \".\" or be empty, got {name!r}")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                            "(nn.Parameter or None required)")
        self._drop(name)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        if "." in name or not name:
            raise KeyError(f"buffer name can't contain \".\" or be empty, got {name!r}")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' (Tensor or None required)")
        self._drop(name)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent_buffers_set.add(name)

    def add_module(self, name: str, module: "Module | None") -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        if "." in name or not name:
            raise KeyError(f"module name can't contain \".\" or be empty, got {name!r}")
        self._drop(name)
        self._modules[name] = module
        _bump()

    register_module = add_module

    def get_submodule(self, target: str) -> "Module":
        mod = self
        for part in target.split(".") if target else []:
            if part not in mod._modules:
                raise AttributeError(f"{type(mod).__name__} has no submodule `{part}` (looking up {target!r})")
            mod = mod._modules[part]
        return mod

    def get_parameter(self, target: str) -> Parameter:
        return self._get_tensor(target, "_parameters", "parameter")

    def get_buffer(self, target: str) -> Tensor:
        return self._get_tensor(target, "_buffers", "buffer")

    def _get_tensor(self, target: str, table: str, kind: str):
        mod_path, _, name = target.rpartition(".")
        mod = self.get_submodule(mod_path)
        if name not in getattr(mod, table):
            raise AttributeError(f"{type(mod).__name__} has no {kind} `{name}`")
        return getattr(mod, table)[name]

    # -- walking the tree -------------------------------------------------------------------
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        if memo is None:
            memo = set()
        if remove_duplicate and id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, store: str, prefix: str, recurse: bool, remove_duplicate: bool = True):
        seen = set()
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for mod_prefix, m in mods:
            for name, t in m.__dict__[store].items():
                if t is None or (remove_duplicate and id(t) in seen):
                    continue
                seen.add(id(t))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), t

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn) -> "Module":
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # -- modes ------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        for m in self.modules():
            m.__dict__["training"] = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad = zeros_like(p.grad.detach())

    # -- device and dtype -------------------------------------------------------------------
    def to(self, *args, **kwargs) -> "Module":
        """Move/cast parameters and buffers in place (floating ones take a dtype; all take a device)."""
        if _trace.current() is not None:
            raise TracegradError("Module.to() inside @tg.compile: move the model before the step")
        dtype, device = kwargs.get("dtype"), kwargs.get("device")
        for a in args:
            if isinstance(a, Tensor):
                dtype, device = a.dtype, a.device
            elif isinstance(a, str):     # devices are strings (tg.device is a str too); dtypes are DTypes
                device = a
            elif a is not None:
                dtype = a

        def convert(t: Tensor) -> None:
            kw = dict(device=device)
            if dtype is not None and t.dtype.is_floating:
                kw["dtype"] = dtype
            new = Tensor.to(Tensor._from_array(t._data, t._type), **kw)
            t._data, t._type = new._data, new._type
            if t._grad is not None:
                convert(t._grad)

        for t in itertools.chain(self.parameters(), self.buffers()):
            convert(t)
        return self

    def cuda(self, device=None) -> "Module":
        return self.to(f"cuda:{device}" if isinstance(device, int) else (device or "cuda"))

    def cpu(self) -> "Module":
        return self.to("cpu")

    def type(self, dst_type) -> "Module":
        return self.to(dst_type)

    def float(self) -> "Module":
        return self.to(_types.float32)

    def double(self) -> "Module":
        return self.to(_types.float64)

    def half(self) -> "Module":
        return self.to(_types.float16)

    def bfloat16(self) -> "Module":
        return self.to(_types.bfloat16)

    # -- printing ---------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        lines = [line for line in self.extra_repr().split("\n") if line]
        for name, m in self._modules.items():
            lines.append(f"({name}): " + _indent(repr(m)))
        if not lines:
            return f"{self._get_name()}()"
        if len(lines) == 1 and not self._modules:
            return f"{self._get_name()}({lines[0]})"
        return f"{self._get_name()}(\n  " + "\n  ".join(lines) + "\n)"


def _indent(s: str) -> str:
    return s.replace("\n", "\n  ")


_call_state = threading.local()


def _roots() -> list:
    """The outermost modules being called on this thread (a stack: a module may call another tree)."""
    roots = getattr(_call_state, "roots", None)
    if roots is None:
        roots = _call_state.roots = []
    return roots
