"""The op registry and every op in it.

Importing this package registers all ops: primitives (elementwise, reduce, movement, linalg,
creation, collective) and composites (nn, attention, losses, conv).
"""
from . import elementwise, reduce, movement, linalg, creation, collective  # noqa: F401  (primitives)
from . import nn, attention, paged_attention, losses, conv  # noqa: F401  (composites)
from . import kernel  # noqa: F401  (fused kernels: the fusion pass makes these)
from .registry import OPS, OpDef, decomposition, defop, get, vjp

PRIMITIVES = tuple(name for name, op in OPS.items() if not op.is_composite)
COMPOSITES = tuple(name for name, op in OPS.items() if op.is_composite)

__all__ = ["OPS", "OpDef", "PRIMITIVES", "COMPOSITES", "defop", "get", "vjp", "decomposition"]
