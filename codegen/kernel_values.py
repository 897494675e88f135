"""The value a kernel writer passes around while it emits a fused group's body (the Triton and the
fused CPU writers alike): an expression, its dtype, and its constant when known."""
from __future__ import annotations

from dataclasses import dataclass

from ..ir.types import DType


@dataclass
class H:
    """A value in the kernel: an expression (usually a `tmpN` name), its dtype, its constant if known."""
    code: str
    dtype: DType
    const: object = None
