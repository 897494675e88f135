"""The training-loss figure the examples write: the loss of every step, its centred moving average,
the evaluations, and a baseline to beat. Drawn with matplotlib's Agg backend (no display needed)."""
from __future__ import annotations

import numpy as np


def moving_average(values, k: int):
    """A centred k-point mean (shorter windows at the ends), so the curve does not lag the data."""
    c = np.cumsum(np.concatenate([[0.0], np.asarray(values, dtype=np.float64)]))
    n, h = len(values), k // 2
    lo = np.clip(np.arange(n) - h, 0, n)
    hi = np.clip(np.arange(n) + h + 1, 0, n)
    return (c[hi] - c[lo]) / (hi - lo)


def plot_losses(history: dict, path: str, baseline: float | None = None, baseline_name: str = "baseline",
                title: str = "tracegrad: training loss") -> None:
    """A PNG at `path` of history = {"step": [...], "loss": [...], "eval": [(step, train, val), ...]},
    with `baseline` (a loss to beat) drawn dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    steps, loss = history["step"], history["loss"]
    ax.plot(steps, loss, lw=0.6, alpha=0.35, color="C0", label="train (per step)")
    k = 25
    if len(loss) > k:
        ax.plot(steps, moving_average(loss, k), color="C0", label=f"train (centred {k}-step mean)")
    if history["eval"]:
        ev = list(zip(*history["eval"]))
        ax.plot(ev[0], ev[2], "o", color="C1", label="val (evaluations)")
    if baseline is not None:
        ax.axhline(baseline, ls="--", color="gray", label=f"{baseline_name} ({baseline:.2f})")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
