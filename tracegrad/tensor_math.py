"""Tensor's elementwise math, in-place updates and operators: the mixin `TensorMath`, which
`TensorShape`, `TensorMethods` and so `Tensor` inherit. Names and arguments are PyTorch's."""
from __future__ import annotations

import math

from . import functions as F_
from .dispatch import apply
from .ir.types import bool_
from .random import rand, randn


class TensorMath:
    """The elementwise methods of `Tensor`, their in-place forms and the operators."""
    __slots__ = ()

    # -- elementwise math ---------------------------------------------------------------------
    def exp(self):
        """e ** x."""
        return F_.unary("exp", self)

    def exp2(self):
        """2 ** x."""
        return (self * math.log(2.0)).exp()

    def log(self):
        """The natural logarithm."""
        return F_.unary("log", self)

    def log2(self):
        """The base-2 logarithm."""
        return self.log() * (1.0 / math.log(2.0))

    def sqrt(self):
        """The square root."""
        return F_.unary("sqrt", self)

    def rsqrt(self):
        """1 / sqrt(x)."""
        return F_.unary("rsqrt", self)

    def square(self):
        """x * x."""
        return self * self

    def tanh(self):
        """The hyperbolic tangent."""
        return F_.unary("tanh", self)

    def sin(self):
        """The sine."""
        return F_.unary("sin", self)

    def cos(self):
        """The cosine."""
        return F_.unary("cos", self)

    def abs(self):
        """The absolute value."""
        return F_.unary("abs", self)

    def sign(self):
        """-1, 0 or 1 by the sign of each element."""
        return F_.unary("sign", self)

    def sigmoid(self):
        """1 / (1 + exp(-x))."""
        return F_.unary("sigmoid", self)

    def erf(self):
        """The error function."""
        return F_.unary("erf", self)

    def reciprocal(self):
        """1 / x."""
        return F_.unary("reciprocal", self)

    def neg(self):
        """-x."""
        return F_.unary("neg", self)

    def floor(self):
        """The largest integer not above x."""
        return F_.unary("floor", self)

    def isnan(self):
        """True where x is NaN."""
        return F_.unary("isnan", self)

    def logical_not(self):
        """True where x is zero (or False)."""
        return F_.unary("logical_not", self)

    def relu(self):
        """max(x, 0)."""
        return apply("relu", self)

    def add(self, other, *, alpha=1):
        """self + alpha * other."""
        return F_.binary("add", self, other * alpha if alpha != 1 else other)

    def sub(self, other, *, alpha=1):
        """self - alpha * other."""
        return F_.binary("sub", self, other * alpha if alpha != 1 else other)

    def mul(self, other):
        """self * other."""
        return F_.binary("mul", self, other)

    def div(self, other):
        """self / other (true division)."""
        return F_.true_divide(self, other)

    def pow(self, exponent):
        """self ** exponent."""
        return self ** exponent

    def maximum(self, other):
        """The elementwise maximum (NaN wins)."""
        return F_.binary("maximum", self, other)

    def minimum(self, other):
        """The elementwise minimum (NaN wins)."""
        return F_.binary("minimum", self, other)

    def clamp(self, min=None, max=None):
        """Values limited to [min, max] (either may be None)."""
        return F_.clamp(self, min, max)

    clip = clamp

    def addcmul(self, tensor1, tensor2, *, value=1):
        """self + value * tensor1 * tensor2."""
        return self + tensor1 * tensor2 * value if value != 1 else self + tensor1 * tensor2

    def addcdiv(self, tensor1, tensor2, *, value=1):
        """self + value * tensor1 / tensor2."""
        return self + tensor1 / tensor2 * value if value != 1 else self + tensor1 / tensor2

    def lerp(self, end, weight):
        """self + weight * (end - self)."""
        return self + (end - self) * weight

    def matmul(self, other):
        """The matrix product, with PyTorch's broadcasting of batch axes and 1-d operands."""
        return F_.matmul(self, other)

    def eq(self, other):
        """self == other, elementwise."""
        return F_.binary("eq", self, other)

    def ne(self, other):
        """self != other, elementwise."""
        return F_.binary("ne", self, other)

    def lt(self, other):
        """self < other, elementwise."""
        return F_.binary("lt", self, other)

    def gt(self, other):
        """self > other, elementwise."""
        return F_.binary("gt", self, other)

    # -- in place (a new value rebound to this tensor) ----------------------------------------
    def add_(self, other, *, alpha=1):
        """In-place `add`."""
        return self._assign(self.add(other, alpha=alpha))

    def sub_(self, other, *, alpha=1):
        """In-place `sub`."""
        return self._assign(self.sub(other, alpha=alpha))

    def mul_(self, other):
        """In-place `mul`."""
        return self._assign(self.mul(other))

    def div_(self, other):
        """In-place `div`."""
        return self._assign(self.div(other))

    def pow_(self, exponent):
        """In-place `pow`."""
        return self._assign(self.pow(exponent))

    def clamp_(self, min=None, max=None):
        """In-place `clamp`."""
        return self._assign(self.clamp(min, max))

    def addcmul_(self, tensor1, tensor2, *, value=1):
        """In-place `addcmul`."""
        return self._assign(self.addcmul(tensor1, tensor2, value=value))

    def addcdiv_(self, tensor1, tensor2, *, value=1):
        """In-place `addcdiv`."""
        return self._assign(self.addcdiv(tensor1, tensor2, value=value))

    def lerp_(self, end, weight):
        """In-place `lerp`."""
        return self._assign(self.lerp(end, weight))

    def maximum_(self, other):
        """In-place `maximum`."""
        return self._assign(self.maximum(other))

    def minimum_(self, other):
        """In-place `minimum`."""
        return self._assign(self.minimum(other))

    def neg_(self):
        """In-place `neg`."""
        return self._assign(self.neg())

    def exp_(self):
        """In-place `exp`."""
        return self._assign(self.exp())

    def sqrt_(self):
        """In-place `sqrt`."""
        return self._assign(self.sqrt())

    def tanh_(self):
        """In-place `tanh`."""
        return self._assign(self.tanh())

    def sigmoid_(self):
        """In-place `sigmoid`."""
        return self._assign(self.sigmoid())

    def relu_(self):
        """In-place `relu`."""
        return self._assign(self.relu())

    def abs_(self):
        """In-place `abs`."""
        return self._assign(self.abs())

    def normal_(self, mean=0.0, std=1.0):
        """Fill with draws from N(mean, std**2)."""
        return self._assign(randn(*self.shape, dtype=self.dtype, device=self._type.device) * std + mean)

    def uniform_(self, a=0.0, b=1.0):
        """Fill with draws from U(a, b)."""
        return self._assign(rand(*self.shape, dtype=self.dtype, device=self._type.device) * (b - a) + a)

    __iadd__ = add_
    __isub__ = sub_
    __imul__ = mul_
    __itruediv__ = div_

    # -- operators ----------------------------------------------------------------------------
    def __matmul__(self, other):
        return F_.matmul(self, other)

    def __rmatmul__(self, other):
        return F_.matmul(other, self)

    def __add__(self, other):
        return F_.binary("add", self, other)

    def __radd__(self, other):
        return F_.binary("add", other, self)

    def __sub__(self, other):
        return F_.binary("sub", self, other)

    def __rsub__(self, other):
        return F_.binary("sub", other, self)

    def __mul__(self, other):
        return F_.binary("mul", self, other)

    def __rmul__(self, other):
        return F_.binary("mul", other, self)

    def __truediv__(self, other):
        return F_.true_divide(self, other)

    def __rtruediv__(self, other):
        return F_.true_divide(other, self)

    def __floordiv__(self, other):
        return F_.floor_divide(self, other)

    def __rfloordiv__(self, other):
        return F_.floor_divide(other, self)

    def __mod__(self, other):
        return F_.binary("mod", self, other)

    def __pow__(self, other):
        base = self if self.dtype.is_floating or isinstance(other, TensorMath) else self.float()
        return F_.binary("pow", base, other)

    def __rpow__(self, other):
        return F_.binary("pow", other, self)

    def __neg__(self):
        return F_.unary("neg", self)

    def __pos__(self):
        return self

    def __abs__(self):
        return F_.unary("abs", self)

    def __invert__(self):
        return F_.unary("logical_not", self.to(bool_))

    def __and__(self, other):
        return F_.binary("logical_and", self.to(bool_), other.to(bool_))

    def __or__(self, other):
        return F_.binary("logical_or", self.to(bool_), other.to(bool_))

    def __eq__(self, other):
        return F_.binary("eq", self, other)

    def __ne__(self, other):
        return F_.binary("ne", self, other)

    def __lt__(self, other):
        return F_.binary("lt", self, other)

    def __le__(self, other):
        return F_.binary("le", self, other)

    def __gt__(self, other):
        return F_.binary("gt", self, other)

    def __ge__(self, other):
        return F_.binary("ge", self, other)
