"""`Optimizer`: param groups, per-parameter state, state_dict, and live hyperparameters.

    opt = tg.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                          {"params": no_decay, "weight_decay": 0.0}], lr=3e-4)

    @tg.compile
    def step(x, y):
        model(x, y).backward(); opt.step(); opt.zero_grad()

    for it in range(n):
        for g in opt.param_groups:
            g["lr"] = lr_at(it)        # takes effect on the next call; no retrace
        step(x, y)

How a learning rate changes without a retrace: inside `@tg.compile`, `step()` runs only while
tracing, so a Python float read there would be baked into the graph. So each group keeps its
numeric options (`lr`, betas, momentum, weight decay, ...: the optimizer's `live` names) twice:
as the Python values users read and write (`group["lr"]`), and as 0-d float64 tensors that the
update math reads. `group[k] = v` (a scheduler, or user code, outside the step) writes the tensor
at once, eagerly; the compiled step lifted that tensor as an input, so its next run reads the new
value. float64 keeps the scalar math (`lr / (1 - beta1**step)`) as exact as PyTorch's Python
floats; the results are cast to the parameter's dtype where they meet a parameter, as PyTorch
casts its Python scalars. Options that change the structure of the update (nesterov, amsgrad,
maximize, momentum 0 vs not) are read at trace time; changing one after a compiled step traced
warns that the step must be compiled anew.

Per-parameter state (`exp_avg`, `step`, ...) is created eagerly on the first `step()` (with
`trace.suspended()` when that first step is being traced), so it is real state that the compiled
step lifts and writes back. Updates are in-place ops under no_grad.
"""
from __future__ import annotations

import copy
import warnings
from collections import defaultdict

import numpy as np

from .. import trace as _trace
from ..autograd import enable_grad, no_grad
from ..creation import tensor as _tensor, zeros_like
from ..ir.types import float32, float64
from ..tensor import Tensor


class _Required:
    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


def _write(t: Tensor, value) -> None:
    """Set a live 0-d tensor to `value`: eagerly outside a trace, as a write-back inside one."""
    with no_grad():
        t.copy_(value.detach() if isinstance(value, Tensor) else float(value))


class ParamGroup(dict):
    """One param group: a dict of options whose numeric ("live") options are mirrored in tensors."""

    def __init__(self, options: dict, live: tuple, index: int):
        super().__init__(options)
        self._live, self._index = live, index
        self._tensors: dict[str, dict[str, object]] = {}   # device -> key -> Tensor | tuple of Tensors
        self._traced_signature = None
        self._signature_fn = None

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        if key in self._live:
            for per_device in self._tensors.values():
                if key in per_device:
                    cur = per_device[key]
                    for t, v in zip(cur, value) if isinstance(cur, tuple) else [(cur, value)]:
                        _write(t, v)
        elif self._traced_signature is not None and self._signature_fn(self) != self._traced_signature:
            warnings.warn(f"param group option {key!r} changed after a compiled step traced this optimizer; it "
                          "changes the structure of the update, which the compiled step read as a constant. "
                          "Compile the step again (a new tg.compile) for it to take effect.", stacklevel=2)

    def update(self, *args, **kwargs) -> None:
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def live(self, device: str) -> dict:
        """The live options as tensors on `device` (made on first use, eagerly)."""
        per_device = self._tensors.get(device)
        if per_device is None:
            per_device = self._tensors[device] = {}
        for key in self._live:
            if key in per_device or key not in self:
                continue
            value = self[key]
            with _trace.suspended():
                if isinstance(value, (tuple, list)):
                    per_device[key] = tuple(self._scalar(v, f"{key}{i}", device) for i, v in enumerate(value))
                else:
                    per_device[key] = self._scalar(value, key, device)
        return per_device

    def _scalar(self, value, key: str, device: str) -> Tensor:
        if isinstance(value, Tensor):
            value = value.item()
        t = _tensor(float(value), dtype=float64, device=device)
        t._name = f"group{self._index}_{key}"
        return t

    def __deepcopy__(self, memo):
        return {k: copy.deepcopy(v, memo) for k, v in self.items()}

    def __reduce__(self):
        return dict, (dict(self),)


class Optimizer:
    """Base class: subclasses set `live` and implement `_init_state(p, group)` and
    `_update(p, grad, state, h, group)` where h holds the group's live options as tensors."""

    live: tuple = ("lr",)

    def __init__(self, params, defaults: dict):
        self.defaults = defaults
        self.state: defaultdict = defaultdict(dict)
        self.param_groups: list[ParamGroup] = []
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {type(params).__name__}")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def __repr__(self) -> str:
        s = type(self).__name__ + " ("
        for i, group in enumerate(self.param_groups):
            s += f"\nParameter Group {i}"
            for k in sorted(group):
                if k != "params":
                    s += f"\n    {k}: {group[k]}"
        return s + "\n)"

    def add_param_group(self, param_group: dict) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
        options = dict(self.defaults)
        options.update({k: v for k, v in param_group.items() if k != "params"})
        for k, v in options.items():
            if v is required:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {k}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        if len({id(p) for p in params}) != len(params):
            warnings.warn("optimizer contains a parameter group with duplicate parameters", stacklevel=3)
        group = ParamGroup({"params": params, **options}, self.live, len(self.param_groups))
        group._signature_fn = self._signature
        self.param_groups.append(group)

    # -- the update -------------------------------------------------------------------------
    def _signature(self, group) -> tuple:
        """The options that change the structure of the update (read at trace time)."""
        return ()

    def _init_state(self, p: Tensor, group) -> dict:
        return {}

    def _update(self, p: Tensor, grad: Tensor, state: dict, h: dict, group) -> None:
        raise NotImplementedError

    def _state_for(self, p: Tensor, group) -> dict:
        state = self.state[p]
        fresh = not state
        if fresh:
            with _trace.suspended(), no_grad():
                state.update(self._init_state(p, group))
        if fresh or _trace.current() is not None:   # names for IR dumps: blocks_0_fc_weight_exp_avg
            for k, v in state.items():
                if isinstance(v, Tensor):
                    v._name = f"{p._name or 'param'}_{k}"
        return state

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure() if given."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        tracing = _trace.current() is not None
        with no_grad():
            for group in self.param_groups:
                if tracing:
                    group._traced_signature = self._signature(group)
                for p in group["params"]:
                    g = p.grad
                    if g is None:
                        continue
                    h = group.live(p._type.device)
                    self._update(p, g, self._state_for(p, group), h, group)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.grad = None if set_to_none else zeros_like(p.grad.detach())

    # -- state dict -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """PyTorch's layout: {'state': {index: {name: tensor}}, 'param_groups': [{options, 'params': [index]}]}."""
        index, groups, n = {}, [], 0
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                if id(p) not in index:
                    index[id(p)] = n
                    n += 1
                ids.append(index[id(p)])
            groups.append({**{k: copy.deepcopy(v) for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[id(p)]: {k: (v.detach() if isinstance(v, Tensor) else copy.deepcopy(v)) for k, v in s.items()}
                 for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load state and options. Existing state tensors are written in place (they keep their
        identity, so a compiled step that lifted them sees the loaded values)."""
        if _trace.current() is not None:
            raise RuntimeError("optimizer.load_state_dict() inside @tg.compile: load before the step")
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for mine, theirs in zip(self.param_groups, saved):
            if len(mine["params"]) != len(theirs["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                                 "optimizer's group")
        params = {i: p for g_saved, g in zip(saved, self.param_groups) for i, p in zip(g_saved["params"], g["params"])}
        for i, values in state_dict["state"].items():
            i = int(i)
            if i not in params:
                continue
            p = params[i]
            state = self.state[p]
            for k, v in values.items():
                self._load_value(p, state, k, v)
        for mine, theirs in zip(self.param_groups, saved):
            for k, v in theirs.items():
                if k != "params":
                    mine[k] = copy.deepcopy(v)

    def _load_value(self, p: Tensor, state: dict, key: str, value) -> None:
        if not isinstance(value, Tensor):
            if not isinstance(value, np.ndarray):
                state[key] = copy.deepcopy(value)
                return
            value = _tensor(value)
        dtype = float32 if key == "step" else (p.dtype if value.dtype.is_floating else value.dtype)
        with _trace.suspended(), no_grad():
            cur = state.get(key)
            if isinstance(cur, Tensor) and tuple(cur.shape) == tuple(value.shape):
                cur.copy_(value.to(cur.dtype).to(cur._type.device))
            else:
                t = value.detach().to(dtype).to(p._type.device)
                new = _tensor(t.numpy(), dtype=dtype, device=p._type.device)
                new._name = f"{p._name or 'param'}_{key}"
                state[key] = new
