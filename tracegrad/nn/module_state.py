"""`Module.state_dict` and `load_state_dict`: the mixin `ModuleState`, which `Module` inherits. Names,
arguments, key order and error messages are PyTorch's.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple

from .. import trace as _trace
from ..autograd import no_grad
from ..creation import tensor as _tensor
from ..errors import TracegradError
from ..runtime.shards import Sharded
from ..tensor import Tensor

_IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class ModuleState:
    __slots__ = ()

    # -- state dict -------------------------------------------------------------------------
    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False) -> "OrderedDict[str, Tensor]":
        """Parameters and persistent buffers by dotted name. Values are detached snapshots
        (tracegrad updates rebind a tensor's storage, so a later step does not change them).
        A parameter a tensor-parallel plan holds in blocks comes back whole: gathered from its
        group's ranks, so under a plan every rank calls `state_dict()`, in the same order."""
        out = OrderedDict() if destination is None else destination
        for mod_prefix, m in self.named_modules(prefix=prefix.rstrip("."), remove_duplicate=False):
            head = f"{mod_prefix}." if mod_prefix else ""
            for name, p in m._parameters.items():
                if p is not None:
                    out[head + name] = p if keep_vars else _snapshot(p)
            for name, b in m._buffers.items():
                if b is not None and name not in m._non_persistent_buffers_set:
                    out[head + name] = b if keep_vars else _snapshot(b)
        return out

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Copy values into this module's parameters and buffers (they keep their identity, so a
        compiled step and an optimizer that hold them see the new values).
        Returns (missing_keys, unexpected_keys); with strict=True a mismatch raises."""
        if _trace.current() is not None:
            raise TracegradError("load_state_dict() inside @tg.compile: load before the step")
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        for k, t in own.items():
            if k not in state_dict:
                continue
            v = state_dict[k]
            if not isinstance(v, Tensor):
                v = _tensor(v)
            if tuple(v.shape) != tuple(t.shape):
                errors.append(f"size mismatch for {k}: copying a param with shape {list(v.shape)} from checkpoint, "
                              f"the shape in current model is {list(t.shape)}.")
                continue
            with no_grad():
                t.copy_(v.detach())
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        return _IncompatibleKeys(missing, unexpected)


def _snapshot(t):
    """t detached; the whole tensor when its storage is a block of a parallel plan (`Sharded`)."""
    if type(t._data) is Sharded:
        return Tensor._from_array(t._data.full(), t._type)
    return t.detach()
