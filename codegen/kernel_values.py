"""The value a kernel writer passes around while it emits a fused group's body (the Triton and the
fused CPU writers alike): an expression, its dtype, and its constant when known; and the lowerings
both writers share but for their spelling (`pow` by a known exponent, `cast`)."""
from __future__ import annotations

from dataclasses import dataclass

from ..ir.types import DType, bool_


@dataclass
class H:
    """A value in the kernel: an expression (usually a `tmpN` name), its dtype, its constant if known."""
    code: str
    dtype: DType
    const: object = None


def pow_lowering(sqrt: str, power: str):
    """`pow` in a writer's spelling: the exponents with a cheaper form (x * x, x, sqrt, 1 / x) written
    so, any other as `power` (a format of base and exponent)."""
    def lower(a, ins, out, exponent=None):
        if exponent == 2:
            return f"{a[0]} * {a[0]}"
        if exponent == 1:
            return a[0]
        if exponent == 0.5:
            return f"{sqrt}({a[0]})"
        if exponent == -1:
            return f"1.0 / {a[0]}"
        return power.format(*a)
    return lower


def cast_lowering(convert):
    """`cast` in a writer's spelling: to bool a test against zero, else `convert(code, dtype)`."""
    def lower(a, ins, out):
        return f"({a[0]} != 0)" if out == bool_ else convert(a[0], out)
    return lower
