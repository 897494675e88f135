"""Misuse that PyTorch rejects is rejected here too, with an error naming the op, the shapes and
the user's line, rather than a silent wrap-around or a bare internal error."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tracegrad as tg
import tracegrad.nn.functional as F

# each takes (library, functional module, a [2, 3] tensor) and uses a dim out of range
BAD_DIMS = {
    "softmax": lambda m, Fm, x: Fm.softmax(x, 2),
    "log_softmax": lambda m, Fm, x: Fm.log_softmax(x, -3),
    "transpose": lambda m, Fm, x: x.transpose(0, 2),
    "unsqueeze": lambda m, Fm, x: x.unsqueeze(3),
    "cat": lambda m, Fm, x: m.cat([x, x], 2),
    "stack": lambda m, Fm, x: m.stack([x, x], -4),
    "index_select": lambda m, Fm, x: x.index_select(2, m.tensor([0])),
    "squeeze": lambda m, Fm, x: x.squeeze(2),
    "flatten": lambda m, Fm, x: x.flatten(0, 2),
    "split": lambda m, Fm, x: x.split(1, 2),
    "permute": lambda m, Fm, x: x.permute(0, 2),
    "chunk": lambda m, Fm, x: x.chunk(2, -3),
    "sum": lambda m, Fm, x: x.sum(2),
    "gather": lambda m, Fm, x: x.gather(2, m.zeros(2, 3, dtype=m.long)),
}


@pytest.mark.parametrize("name", sorted(BAD_DIMS))
def test_out_of_range_dim_raises_index_error(name):
    fn = BAD_DIMS[name]
    with pytest.raises(IndexError):
        fn(torch, torch.nn.functional, torch.zeros(2, 3))
    with pytest.raises(IndexError, match="out of range"):
        fn(tg, F, tg.zeros(2, 3))
