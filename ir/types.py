"""Static types of IR values: element types (`DType`) and `TensorType` (shape, dtype, device).

Printed the way dumps show them: `f32[8, 64]`, `i64[]`, `bf16[4, 16]@cuda:0`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class DType:
    name: str          # PyTorch's name: "float32"
    short: str         # dump name: "f32"
    itemsize: int
    kind: str          # "float", "int", "bool", "uint"

    @property
    def is_floating(self) -> bool:
        return self.kind == "float"

    @property
    def is_integer(self) -> bool:
        return self.kind in ("int", "uint")

    @cached_property
    def np(self) -> np.dtype:
        if self.name == "bfloat16":
            import ml_dtypes
            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(self.name)

    def __repr__(self) -> str:
        return f"tracegrad.{self.name}"

    def __reduce__(self):
        return (dtype, (self.name,))


float64 = DType("float64", "f64", 8, "float")
float32 = DType("float32", "f32", 4, "float")
float16 = DType("float16", "f16", 2, "float")
bfloat16 = DType("bfloat16", "bf16", 2, "float")
int64 = DType("int64", "i64", 8, "int")
int32 = DType("int32", "i32", 4, "int")
int16 = DType("int16", "i16", 2, "int")
int8 = DType("int8", "i8", 1, "int")
uint8 = DType("uint8", "u8", 1, "uint")
uint32 = DType("uint32", "u32", 4, "uint")
bool_ = DType("bool", "b8", 1, "bool")

DTYPES = {d.name: d for d in (float64, float32, float16, bfloat16, int64, int32, int16, int8, uint8, uint32, bool_)}
_ALIASES = {"float": float32, "double": float64, "half": float16, "long": int64, "int": int32, "bool_": bool_,
            "f32": float32, "f64": float64, "f16": float16, "bf16": bfloat16, "i64": int64, "i32": int32}


def dtype(x) -> DType:
    """Any dtype spelling (DType, name, numpy dtype, Python type) -> DType."""
    if isinstance(x, DType):
        return x
    if x is float:
        return float32
    if x is int:
        return int64
    if x is bool:
        return bool_
    if isinstance(x, str):
        if x in DTYPES:
            return DTYPES[x]
        if x in _ALIASES:
            return _ALIASES[x]
        raise TypeError(f"unsupported dtype {x!r}; supported: {', '.join(DTYPES)}")
    try:
        npd = np.dtype(x)
    except TypeError:
        raise TypeError(f"unsupported dtype {x!r}; supported: {', '.join(DTYPES)}") from None
    if npd.name == "bfloat16":
        return bfloat16
    if npd.name in DTYPES:
        return DTYPES[npd.name]
    raise TypeError(f"unsupported dtype {npd}; supported: {', '.join(DTYPES)}")


_FLOAT_RANK = {float16: 1, bfloat16: 1, float32: 2, float64: 3}


def promote(a: DType, b: DType) -> DType:
    """PyTorch's promotion for two tensor operands of equal standing."""
    if a == b:
        return a
    if a.is_floating and b.is_floating:
        if {a, b} == {float16, bfloat16}:
            return float32
        return a if _FLOAT_RANK[a] > _FLOAT_RANK[b] else b
    if a.is_floating:
        return a
    if b.is_floating:
        return b
    if a == bool_:
        return b
    if b == bool_:
        return a
    return a if a.itemsize >= b.itemsize else b


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: DType
    device: str = "cpu"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def with_(self, shape=None, dtype=None, device=None) -> "TensorType":
        return TensorType(tuple(self.shape if shape is None else shape),
                          self.dtype if dtype is None else dtype,
                          self.device if device is None else device)

    def __str__(self) -> str:
        s = f"{self.dtype.short}[{', '.join(map(str, self.shape))}]"
        return s if self.device == "cpu" else f"{s}@{self.device}"
