"""User-facing errors: each names the op, the shapes and the user's file:line, and says what to do."""
from __future__ import annotations


class TracegradError(RuntimeError):
    """Base class of tracegrad's frontend errors."""


class ShapeError(TracegradError, TypeError):
    """An op got shapes or dtypes it cannot take."""


class DataDependentError(TracegradError):
    """A traced value was used where Python needs a concrete one (if/while, int(), .item()).

    Inside `@tg.compile` tensors are symbolic: the step is recorded once and replayed, so Python
    cannot branch on their values. Use `tg.where(cond, a, b)`, or move the branch out of the step.
    """


class UnsupportedError(TracegradError, NotImplementedError):
    """A name, dtype or argument that tracegrad does not support (yet)."""


class DonatedError(TracegradError):
    """A tensor given to a step compiled with `donate=` was used after the call."""


class Donated:
    """What a donated tensor holds after the call: the step may have written its results into the
    buffer, so every later use raises (as JAX does with donated arrays)."""
    __slots__ = ("step", "name")

    def __init__(self, step: str, name: str):
        self.step, self.name = step, name

    def __getattr__(self, name):
        # every use of the buffer (numpy probing `__array__`, `.shape`, `.reshape`, ...) lands here,
        # so an eager op on a donated tensor fails without a check on the per-op path
        raise self.error()

    def error(self) -> DonatedError:
        return DonatedError(f"{self.name!r} was donated to {self.step} (tg.compile(..., donate=...)), which may "
                            "have reused its buffer; use the step's outputs, or donate a copy (x.clone())")
