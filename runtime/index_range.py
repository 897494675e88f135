"""Index range errors: one message for every path that finds an index out of range.

    embedding: index 9 is out of range [0, 4)
      at train.py:41: x = self.wte(idx)

Host arrays (eager CPU ops, numpy programs, compiled-step inputs) are checked at once with
`check_host`; compiled Triton steps check inside their kernels and report through the same
`out_of_range` (see `index_flags.py`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


TARGETS = ("cross_entropy", "nll_loss")     # ops whose index operand is called a target


def out_of_range(op: str, value: int, size: int, where: str, allowed: int | None = None,
                 lo: int = 0) -> IndexError:
    """The one error for an index outside [lo, size) (`allowed`: a value let through, ignore_index)."""
    what = "target" if op in TARGETS else "index"
    ok = f"; {allowed} (ignore_index) is let through" if allowed is not None else ""
    return IndexError(f"{op}: {what} {value} is out of range [{lo}, {size}){ok}"
                      f"\n  at {where}")


def first_out_of_range(idx, size: int, allowed: int | None = None, lo: int = 0) -> int | None:
    """The first entry of a host integer array outside [lo, size) other than `allowed`, or None.
    One min and max when every index is fine."""
    idx = np.asarray(idx)
    if idx.size == 0 or idx.dtype.kind not in "iu" or (idx.min() >= lo and idx.max() < size):
        return None
    bad = (idx < lo) | (idx >= size)
    if allowed is not None:
        bad &= idx != allowed
    return int(idx[bad].flat[0]) if bad.any() else None


def check_host(op: str, idx, size: int, where: str, allowed: int | None = None, lo: int = 0) -> None:
    """Raise `out_of_range` for the first bad entry of a host array (numpy)."""
    bad = first_out_of_range(idx, size, allowed, lo)
    if bad is not None:
        raise out_of_range(op, bad, size, where, allowed, lo)


@dataclass(frozen=True)
class Site:
    """One checked index operand of a program: what the error will say about it."""
    op: str
    size: int
    where: str
    allowed: int | None = None
    lo: int = 0
