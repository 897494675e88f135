"""`tg.compile(model)`: a module whose calls run a compiled forward, and torch.compile's keywords.

    model = tg.compile(GPT(cfg), mode="max-autotune")   # as torch.compile(model)
    logits, loss = model(x, y)                           # traced on the first call, replayed after
    model._orig_mod                                      # the module itself
    model.state_dict()                                   # keys start with "_orig_mod.", as in PyTorch

`OptimizedModule` is a `Module` holding the original under `_orig_mod`, so `parameters()`,
`train()`/`eval()`, `to()` and `state_dict()` reach the same tensors, and any other attribute is
looked up on the original (`model.config`, `model.configure_optimizers(...)`).
"""
from __future__ import annotations

from . import debug
from .nn.module import Module

# torch.compile's backends that mean "compile it": all map to tracegrad's own choice.
TORCH_BACKENDS = ("inductor", "eager", "aot_eager", "cudagraphs")
BACKENDS = ("auto", "numpy", "cpu", "triton")
# what a CompiledFunction answers about its compilations, asked of the compiled module
INSPECT = ("ir", "explain", "graphs", "entries", "retrace_reasons", "profile")
MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def torch_options(backend, mode, fullgraph, dynamic, options, disable) -> str:
    """torch.compile's keywords -> tracegrad's backend name, or a ValueError listing what is accepted."""
    if callable(backend) and not isinstance(backend, str):
        raise ValueError("tg.compile: a custom backend function is not supported; backend must be one of "
                         f"{BACKENDS + TORCH_BACKENDS}")
    if backend in TORCH_BACKENDS:
        debug.log("recompiles", "torch.compile backend=%r: tracegrad uses its own backend (auto)", backend)
        backend = "auto"
    if backend not in BACKENDS:
        raise ValueError(f"tg.compile: backend must be one of {BACKENDS} (or PyTorch's {TORCH_BACKENDS}, which "
                         f"mean 'auto'), got {backend!r}")
    if mode not in MODES:
        raise ValueError(f"tg.compile: mode must be one of {MODES}, got {mode!r}")
    # NOTE: a traced step is always one whole graph (fullgraph=True holds by construction); each new
    # shape is its own compilation (dynamic=True cannot make shapes symbolic); `options` are
    # Inductor's knobs, which have no meaning here. They are accepted so torch.compile calls run.
    return backend


class OptimizedModule(Module):
    """A module whose `forward` is `tg.compile`d; the original lives on as `_orig_mod`."""

    def __init__(self, mod: Module, make):
        super().__init__()
        self._orig_mod = mod
        self.__dict__["_make"] = make
        self.__dict__["_variants"] = {}      # the modules' training flags -> a compiled forward
        self.__dict__["_compiled"] = None
        self.__dict__["dynamo_ctx"] = None

    def forward(self, *args, **kwargs):
        # NOTE: train()/eval() change what forward computes (dropout, batch norm) without changing
        # any argument, so each combination of training flags gets a compiled forward of its own.
        self.__dict__["_compiled"] = self._current()
        return self.__dict__["_compiled"](*args, **kwargs)

    def _current(self):
        """The compiled forward for the modules' present training flags."""
        d = self.__dict__
        key = tuple(m.training for m in self._modules["_orig_mod"].modules())
        if key not in d["_variants"]:
            d["_variants"][key] = d["_make"]()
        return d["_variants"][key]

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            pass
        if name in INSPECT:                  # step.ir(...), step.entries, step.retrace_reasons, ...
            return getattr(self._current(), name)
        return getattr(self._modules["_orig_mod"], name)

    def __repr__(self) -> str:
        return f"OptimizedModule({self._modules['_orig_mod']!r})"


def compile_module(mod: Module, make) -> OptimizedModule:
    """Wrap `mod`: its calls go through `make(fn)`, a CompiledFunction of a function calling it."""
    def forward(*args, **kwargs):
        return mod(*args, **kwargs)

    forward.__name__ = type(mod).__name__
    forward.__wrapped__ = mod.forward          # so retrace reasons name forward's arguments
    return OptimizedModule(mod, lambda: make(forward))
