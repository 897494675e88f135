"""Comparisons, rounding and small elementwise methods: `ge`/`le`, `isclose`/`allclose`/`equal`,
`round`/`ceil`/`trunc`/`frac`, `isinf`/`isfinite`/`nan_to_num`, `log1p`/`expm1`, `clamp_min`/
`clamp_max`, `logical_and/or/xor`, as Tensor methods and `tg.*` functions.

All are composites of the elementwise primitives. Rounding has PyTorch's semantics: `round`
rounds half to even, and its gradient (like floor's) is zero.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import math

from . import functions as F_
from .ir.types import bool_

if TYPE_CHECKING:     # annotations only: tensor.py imports this module first
    from .tensor import Tensor


def ge(self, other) -> Tensor:
    """self >= other, elementwise (bool)."""
    return F_.binary("ge", self, other)


def le(self, other) -> Tensor:
    """self <= other, elementwise (bool)."""
    return F_.binary("le", self, other)


greater_equal, less_equal = ge, le


def greater(self, other) -> Tensor:
    """self > other, elementwise (bool)."""
    return F_.binary("gt", self, other)


def less(self, other) -> Tensor:
    """self < other, elementwise (bool)."""
    return F_.binary("lt", self, other)


def isclose(self, other, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> Tensor:
    """|self - other| <= atol + rtol * |other|, elementwise (infinities equal when they are equal)."""
    a, b = F_.coerce(self, other)
    if not a.dtype.is_floating:
        a, b = a.float(), b.float()
    close = (a - b).abs() <= atol + rtol * b.abs()
    close = close | (a == b)
    if equal_nan:
        close = close | (a.isnan() & b.isnan())
    return close & ~(a.isnan() | b.isnan()) if not equal_nan else close


def allclose(self, other, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> bool:
    """True when isclose holds everywhere (one host sync: it returns a Python bool)."""
    return bool(isclose(self, other, rtol, atol, equal_nan).all().item())


def equal(self, other) -> bool:
    """Same shape and the same values."""
    return tuple(self.shape) == tuple(other.shape) and bool((self == other).all().item())


def round(self, decimals: int = 0) -> Tensor:
    """Round half to even (as PyTorch and numpy); with `decimals`, at that many decimal places."""
    if not self.dtype.is_floating:
        return self
    x = self.detach()
    if decimals:
        x = x * (10.0 ** decimals)
    r = (x + 0.5).floor()
    tie = (r - x) == 0.5
    odd = (r - (r * 0.5).floor() * 2.0) != 0
    r = F_.where(tie & odd, r - 1.0, r)
    return r * (10.0 ** -decimals) if decimals else r


def ceil(self) -> Tensor:
    """The smallest integer >= x (gradient zero)."""
    return -F_.unary("floor", -self) if self.dtype.is_floating else self


def trunc(self) -> Tensor:
    """Rounded toward zero (gradient zero)."""
    if not self.dtype.is_floating:
        return self
    return F_.where(self < 0, ceil(self), F_.unary("floor", self))


fix = trunc


def frac(self) -> Tensor:
    """x - trunc(x)."""
    return self - trunc(self)


def isinf(self) -> Tensor:
    """True at +inf and -inf."""
    return self.abs() == math.inf if self.dtype.is_floating else F_.binary("ne", self, self)


def isfinite(self) -> Tensor:
    """True where x is neither inf nor NaN."""
    if not self.dtype.is_floating:
        return F_.binary("eq", self, self)
    return ~(self.isnan() | isinf(self))


def isposinf(self) -> Tensor:
    """True at +inf."""
    return self == math.inf


def isneginf(self) -> Tensor:
    """True at -inf."""
    return self == -math.inf


def nan_to_num(self, nan: float = 0.0, posinf=None, neginf=None) -> Tensor:
    """NaN -> nan, +inf -> posinf (default: the dtype's max), -inf -> neginf (default: its min)."""
    import numpy as np
    big = float(np.finfo(np.float32 if self.dtype.itemsize <= 4 else np.float64).max)
    x = F_.where(self.isnan(), nan, self)
    x = F_.where(x == math.inf, big if posinf is None else posinf, x)
    return F_.where(x == -math.inf, -big if neginf is None else neginf, x)


def log1p(self) -> Tensor:
    """log(1 + x), accurate for small |x|."""
    # NOTE: log(1 + x) loses digits for |x| << 1; the correction term restores them (Goldberg's trick)
    u = 1.0 + self
    d = u - 1.0
    return F_.where(d == 0, self, u.log() * self / F_.where(d == 0, 1.0, d))


def expm1(self) -> Tensor:
    """exp(x) - 1, accurate for small |x|."""
    u = self.exp()
    lu = u.log()
    return F_.where(u == 1.0, self, F_.where(u - 1.0 == -1.0, -1.0, (u - 1.0) * self / F_.where(lu == 0, 1.0, lu)))


def clamp_min(self, min) -> Tensor:
    """max(x, min)."""
    return F_.clamp(self, min=min)


def clamp_max(self, max) -> Tensor:
    """min(x, max)."""
    return F_.clamp(self, max=max)


def logical_and(self, other) -> Tensor:
    """Both non-zero (bool)."""
    return F_.binary("logical_and", self.to(bool_), other.to(bool_))


def logical_or(self, other) -> Tensor:
    """Either non-zero (bool)."""
    return F_.binary("logical_or", self.to(bool_), other.to(bool_))


def logical_xor(self, other) -> Tensor:
    """Exactly one non-zero (bool)."""
    return F_.binary("ne", self.to(bool_), other.to(bool_))


def log10(self) -> Tensor:
    """Base-10 logarithm."""
    return F_.unary("log", self) * (1.0 / math.log(10.0))


def remainder(self, other) -> Tensor:
    """Python's modulo: the result takes the divisor's sign."""
    return F_.binary("mod", self, other)


def __xor__(self, other) -> Tensor:
    return logical_xor(self, other)


def _inplace(fn):
    def method(self, *args, **kwargs):
        return self._assign(fn(self, *args, **kwargs))
    method.__name__, method.__doc__ = fn.__name__ + "_", f"In-place {fn.__name__}."
    return method


class CompareMethods:
    """Tensor's comparisons, roundings and elementwise tests, and their in-place forms (a mixin of `Tensor`)."""
    __slots__ = ()
    ge = ge
    le = le
    greater = greater
    greater_equal = ge
    less = less
    less_equal = le
    isclose = isclose
    allclose = allclose
    equal = equal
    round = round
    ceil = ceil
    trunc = trunc
    frac = frac
    isinf = isinf
    isfinite = isfinite
    isposinf = isposinf
    isneginf = isneginf
    nan_to_num = nan_to_num
    log1p = log1p
    expm1 = expm1
    clamp_min = clamp_min
    clamp_max = clamp_max
    logical_and = logical_and
    logical_or = logical_or
    logical_xor = logical_xor
    log10 = log10
    remainder = remainder
    __xor__ = __xor__
    fix = trunc
    round_ = _inplace(round)
    ceil_ = _inplace(ceil)
    trunc_ = _inplace(trunc)
    clamp_min_ = _inplace(clamp_min)
    clamp_max_ = _inplace(clamp_max)
    nan_to_num_ = _inplace(nan_to_num)
    log1p_ = _inplace(log1p)
    expm1_ = _inplace(expm1)
