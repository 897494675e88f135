"""Errors raised by the IR layer. The frontend adds the user's file:line before showing them."""
from __future__ import annotations


class IRError(Exception):
    """Base class of tracegrad's IR errors."""


class OpTypeError(IRError, TypeError):
    """An op got inputs whose shapes or dtypes it cannot take.

    Carries the op name and input types so the frontend can point at the user's line.
    """

    def __init__(self, op: str, types, reason: str):
        self.op, self.types, self.reason = op, tuple(types), reason
        shown = ", ".join(str(t) for t in self.types)
        super().__init__(f"{op}({shown}): {reason}")


class UnknownOpError(IRError, KeyError):
    def __init__(self, op: str):
        self.op = op
        super().__init__(f"unknown op {op!r}: it is not in tracegrad's op registry")

    def __str__(self) -> str:
        return self.args[0]


class VerifyError(IRError):
    """The IR broke an invariant (SSA, types); says which node and which pass."""
