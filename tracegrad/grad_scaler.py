"""`GradScaler`: dynamic loss scaling for fp16, so that small gradients do not flush to zero."""
from __future__ import annotations

from . import trace
from .autograd import no_grad
from .creation import tensor
from .functions import where
from .ir.types import float32
from .tensor import Tensor


class GradScaler:
    """Dynamic loss scaling for fp16 training, with PyTorch's API and arithmetic:

        scaler = tg.amp.GradScaler()
        @tg.compile
        def step(x, y):
            with tg.autocast(tg.float16):
                loss = model(x, y)
            scaler.scale(loss).backward()
            scaler.step(opt)           # unscales the grads; skips the update if any is inf/NaN
            scaler.update()            # backoff on overflow, growth after `growth_interval` good steps
            opt.zero_grad()

    PyTorch skips `optimizer.step()` on the host after reading found_inf (a sync). Here the skip is
    data: the update runs, and every parameter and state tensor it wrote is then chosen back with
    `where(found_inf, before, after)`; the scale, the growth tracker and found_inf are 0-d tensors.
    So one compiled step serves skipped and taken steps alike, with no retrace and no sync.
    """

    def __init__(self, device: str = "cpu", init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True):
        if not (growth_factor > 1.0 and 0.0 < backoff_factor < 1.0 and growth_interval > 0):
            raise ValueError("GradScaler: need growth_factor > 1, 0 < backoff_factor < 1, growth_interval > 0; got "
                             f"{growth_factor}, {backoff_factor}, {growth_interval}")
        self.device, self.enabled = device, enabled
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self._scale = self._state(init_scale, "scale")
        self._growth_tracker = self._state(0.0, "growth_tracker")
        self._found_inf: dict[int, object] = {}    # id(optimizer) -> 0-d tensor, 1.0 where a grad was not finite
        self._unscaled: set[int] = set()           # optimizers unscaled since the last update()

    def _state(self, value: float, name: str):
        with trace.suspended():
            t = tensor(float(value), dtype=float32, device=self.device)
        t._name = f"grad_scaler_{name}"
        return t

    def scale(self, outputs):
        """outputs * scale (a tensor, or any nesting of lists and tuples of them)."""
        if not self.enabled:
            return outputs
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        return outputs * self._scale.to(outputs.dtype, device=outputs.device)

    def unscale_(self, optimizer) -> None:
        """Divide the optimizer's gradients by the scale, and record whether any is inf or NaN."""
        if not self.enabled:
            return
        if id(optimizer) in self._unscaled:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update()")
        with no_grad():
            inv = 1.0 / self._scale
            bad = None
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad.float() * inv.to(device=p.grad.device)
                    flag = (g * 0.0).isnan().any().float().to(device=self.device)   # inf * 0, NaN * 0: NaN
                    bad = flag if bad is None else bad + flag
                    p.grad = g.to(p.grad.dtype)
            found = self._found_inf.get(id(optimizer))
            if found is None:
                found = self._found_inf[id(optimizer)] = self._state(0.0, f"found_inf{len(self._found_inf)}")
            found.copy_((bad > 0).float() if bad is not None else 0.0)
        self._unscaled.add(id(optimizer))

    def step(self, optimizer, *args, **kwargs):
        """unscale_ (unless done), then optimizer.step(), kept only where no gradient overflowed."""
        if not self.enabled:
            return optimizer.step(*args, **kwargs)
        if id(optimizer) not in self._unscaled:
            self.unscale_(optimizer)
        with no_grad():
            before = []
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = optimizer._state_for(p, group)     # made now, so a skipped first step keeps it
                    before += [(t, t.detach()) for t in [p, *state.values()] if isinstance(t, Tensor)]
            out = optimizer.step(*args, **kwargs)
            skip = self._found_inf[id(optimizer)] > 0
            for t, old in before:
                t.copy_(where(skip.to(device=t.device), old, t))
        return out

    def update(self, new_scale=None) -> None:
        """Back off the scale after an overflow, grow it after `growth_interval` steps without one."""
        if not self.enabled:
            return
        with no_grad():
            if new_scale is not None:
                self._scale.copy_(new_scale)
            elif self._found_inf:
                found = sum(self._found_inf.values()) > 0
                tracker = self._growth_tracker + 1.0
                grow = tracker >= float(self.growth_interval)
                self._scale.copy_(where(found, self._scale * self.backoff_factor,
                                        where(grow, self._scale * self.growth_factor, self._scale)))
                self._growth_tracker.copy_(where(found, 0.0, where(grow, 0.0, tracker)))
        self._unscaled.clear()

    def get_scale(self) -> float:
        return self._scale.item() if self.enabled else 1.0

    def is_enabled(self) -> bool:
        return self.enabled

    def state_dict(self) -> dict:
        if not self.enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "_growth_tracker": int(self._growth_tracker.item())}

    def load_state_dict(self, state: dict) -> None:
        """Values are written into the existing tensors, so a compiled step that lifted them sees them."""
        if not state:
            raise RuntimeError("the state dict is empty: it came from a disabled GradScaler")
        self.growth_factor, self.backoff_factor = state["growth_factor"], state["backoff_factor"]
        self.growth_interval = state["growth_interval"]
        with no_grad():
            self._scale.copy_(float(state["scale"]))
            self._growth_tracker.copy_(float(state["_growth_tracker"]))
