"""Fused cross-entropy template over logits [N, V] and integer targets [N].

With x = logits[i] (read in fp32), t = targets[i], eps = label_smoothing and
the smoothed target distribution y = (1 - eps) onehot(t) + eps / V (PyTorch's
`F.cross_entropy(..., label_smoothing=eps)`):

    lse_i  = log sum_j exp(x_j)
    loss_i = -sum_j y_j log softmax(x)_j = lse_i - (1 - eps) x_t - (eps / V) sum_j x_j
    loss   = sum_i loss_i / count            (rows with t == ignore_index: loss_i = 0,
                                              and they are not counted)
    dlogits_i = (softmax(x) - y) * gy / count                    (0 for ignored rows)

One program per row loops over V in BLOCK_V chunks, so no [N, V] fp32 array
is ever made; the backward can write dlogits over the logits themselves.

    from tracegrad.runtime.templates.cross_entropy import cross_entropy, cross_entropy_backward
    loss, lse = cross_entropy(logits, targets, ignore_index=-100)
    dlogits = cross_entropy_backward(logits, targets, lse, inplace=True)
"""
from __future__ import annotations

import numpy as np
import triton
import triton.language as tl

from ..devices import dtype_of, empty, is_cuda, strides_of
from ..triton_host import launch


# ---------------------------------------------------------------------------
# Forward: an online logsumexp (Milakov & Gimelshein 2018) kept per lane of
# the block: m = running max, s = sum exp(x - m); lanes merge at the end:
#   M = max(m),  lse = M + log(sum s * exp(m - M)).
# Per-lane state saves two block reductions per chunk.  m starts at a finite
# -1e30 so a lane that only ever sees padding (-inf) keeps s = 0, not NaN.
# ---------------------------------------------------------------------------
@triton.jit
def _ce_fwd(logits, targets, loss, lse, chk, stride_row, V, ignore_index, smoothing,
            BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = logits + row * stride_row
    m = tl.full([BLOCK_V], -1e30, tl.float32)
    s = tl.zeros([BLOCK_V], tl.float32)
    sum_x = tl.zeros([BLOCK_V], tl.float32)
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        x = tl.load(x_row + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        s = s * tl.exp(m - m_new) + tl.exp(x - m_new)
        sum_x += tl.where(cols < V, x, 0.0)
        m = m_new
    m_row = tl.max(m, 0)
    lse_row = m_row + tl.log(tl.sum(s * tl.exp(m - m_row), 0))

    t = tl.load(targets + row)
    ignored = t == ignore_index
    # NOTE: a target out of range is flagged in chk = (set, value) (index_flags.py) and read as 0
    bad = ((t < 0) | (t >= V)) & (t != ignore_index)
    tl.store(chk, 1, mask=bad)
    tl.store(chk + 1, t.to(tl.int64), mask=bad)
    x_t = tl.load(x_row + tl.where(ignored | bad, 0, t)).to(tl.float32)
    loss_row = lse_row - (1.0 - smoothing) * x_t - smoothing / V * tl.sum(sum_x, 0)
    tl.store(loss + row, tl.where(ignored, 0.0, loss_row))
    tl.store(lse + row, lse_row)


# ---------------------------------------------------------------------------
# Backward: dlogits = (exp(x - lse) - (1 - eps) [j == t] - eps / V) * g with
# g = gy / count read from memory (no host sync), 0 on ignored rows.  Each
# program reads a chunk before writing it, so dlogits may alias logits.
# ---------------------------------------------------------------------------
@triton.jit
def _ce_bwd(logits, targets, lse, dlogits, grad_scale, stride_row, stride_drow, V,
            ignore_index, smoothing, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    t = tl.load(targets + row)
    lse_row = tl.load(lse + row)
    g = tl.where(t == ignore_index, 0.0, tl.load(grad_scale))
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        x = tl.load(logits + row * stride_row + cols, mask=cols < V, other=0.0).to(tl.float32)
        y = tl.where(cols == t, 1.0 - smoothing, 0.0) + smoothing / V
        dx = (tl.exp(x - lse_row) - y) * g
        tl.store(dlogits + row * stride_drow + cols, dx.to(dlogits.dtype.element_ty), mask=cols < V)


# ---------------------------------------------------------------------------
# Host functions
# ---------------------------------------------------------------------------

def _xp(x):
    if is_cuda(x):
        import cupy
        return cupy
    return np


def pick_blocks(kind: str, V: int, cuda: bool) -> dict:
    """BLOCK_V and warps for kind "fwd" or "bwd" (H100, bf16 [16384, 50304]: the
    forward, holding three fp32 vectors a lane, likes narrower chunks)."""
    if not cuda:
        return dict(BLOCK_V=min(64, triton.next_power_of_2(V)))
    block_v, warps = (1024, 4) if kind == "fwd" else (2048, 8)
    return dict(BLOCK_V=min(block_v, triton.next_power_of_2(V)), num_warps=warps)


def _check(logits, targets):
    if logits.ndim != 2 or targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(f"cross_entropy: want logits [N, V] and targets [N], "
                         f"got {list(logits.shape)} and {list(targets.shape)}")
    if dtype_of(targets).kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integers, got {dtype_of(targets)}")
    if strides_of(logits)[1] != 1:
        raise ValueError("cross_entropy: logits rows must be contiguous (stride 1 along V)")


def cross_entropy_forward(logits, targets, ignore_index: int = -100, label_smoothing: float = 0.0,
                          blocks: dict | None = None, chk=None):
    """Per-row loss and logsumexp, both fp32 [N] (loss 0 on ignored rows). A target out of range
    (other than ignore_index) sets the int64 pair `chk` to (1, target) (see index_flags.py)."""
    _check(logits, targets)
    N, V = logits.shape
    loss = empty((N,), np.float32, like=logits)
    lse = empty((N,), np.float32, like=logits)
    if chk is None:
        chk = empty((2,), np.int64, like=logits)      # nobody reads it: only a target to store into
    launch(_ce_fwd, (N,), logits, targets, loss, lse, chk, strides_of(logits)[0], V, int(ignore_index),
           float(label_smoothing), **(blocks or pick_blocks("fwd", V, is_cuda(logits))))
    return loss, lse


def cross_entropy(logits, targets, ignore_index: int = -100, label_smoothing: float = 0.0,
                  blocks: dict | None = None):
    """Mean loss over non-ignored rows (a 0-d fp32 array, NaN when every row is
    ignored, as in PyTorch) and the per-row logsumexp for the backward."""
    loss, lse = cross_entropy_forward(logits, targets, ignore_index, label_smoothing, blocks)
    count = (targets != ignore_index).sum()
    return (loss.sum() / count).astype(np.float32), lse


def cross_entropy_backward(logits, targets, lse, grad_output=1.0, ignore_index: int = -100,
                           label_smoothing: float = 0.0, reduction: str = "mean",
                           inplace: bool = False, blocks: dict | None = None):
    """dlogits in logits' dtype for the "mean" (or "sum") loss.

    grad_output is the loss's gradient, a float or a one-element array (read
    on the device).  inplace=True writes over `logits` and returns it."""
    _check(logits, targets)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"cross_entropy_backward: reduction {reduction!r} is not 'mean' or 'sum'")
    xp = _xp(targets)
    N, V = logits.shape
    grad_scale = xp.asarray(grad_output, dtype=np.float32).reshape(1)
    if reduction == "mean":
        grad_scale = (grad_scale / (targets != ignore_index).sum()).astype(np.float32)
    dlogits = logits if inplace else empty((N, V), dtype_of(logits), like=logits)
    launch(_ce_bwd, (N,), logits, targets, lse, dlogits, grad_scale, strides_of(logits)[0],
           strides_of(dlogits)[0], V, int(ignore_index), float(label_smoothing),
           **(blocks or pick_blocks("bwd", V, is_cuda(logits))))
    return dlogits
