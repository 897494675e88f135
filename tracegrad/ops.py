"""`tracegrad.ops.<name>(*tensors, **attrs)`: any registered op by its IR name.

This is the namespace an IR dump calls (`t3: f32[4] = ops.add(t1, t2)`), so a dump can be run:
`exec` it with `tracegrad.ir.printer.namespace(tracegrad.ops)` after
`from __future__ import annotations`.
"""
from __future__ import annotations

from .dispatch import apply
from .ir.ops import OPS


def __getattr__(name: str):
    if name not in OPS:
        raise AttributeError(f"tracegrad.ops has no op {name!r}")
    return lambda *inputs, **attrs: apply(name, *inputs, **attrs)


def __dir__():
    return sorted(OPS)
