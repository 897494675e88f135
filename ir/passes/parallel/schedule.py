"""Pipeline schedules: the order in which one stage runs the forward (F) and backward (B) of each
micro-batch, and the bubble (the idle share of a step) they leave.

    AFAB (GPipe, Huang et al. 2019): every forward, then every backward.
    1F1B (PipeDream-Flush, Narayanan et al. 2021): stage s runs pp - s - 1 forwards to fill the
    pipe, then alternates one forward and one backward, then drains the backwards; the same bubble
    as AFAB, but at most pp - s micro-batches' activations alive instead of all m.
"""
from __future__ import annotations

SCHEDULES = ("afab", "1f1b")


def stage_order(schedule: str, stage: int, stages: int, microbatches: int) -> list[tuple[str, int]]:
    """[("F", 0), ("F", 1), ("B", 0), ...] for `stage` of `stages`."""
    m = microbatches
    if schedule == "afab":
        return [("F", k) for k in range(m)] + [("B", k) for k in range(m)]
    if schedule != "1f1b":
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    warmup = min(stages - stage - 1, m)
    order = [("F", k) for k in range(warmup)]
    for i in range(m - warmup):
        order += [("F", warmup + i), ("B", i)]
    return order + [("B", k) for k in range(m - warmup, m)]


def bubble_fraction(stages: int, microbatches: int) -> float:
    """(pp - 1) / (m + pp - 1): the share of a step a stage waits, with equal stage times."""
    return (stages - 1) / (microbatches + stages - 1)
