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


BAD_INDICES = {
    "embedding": (lambda i: F.embedding(i, tg.ones(4, 2)), [5]),
    "embedding (negative)": (lambda i: F.embedding(i, tg.ones(4, 2)), [-1]),
    "gather": (lambda i: tg.ones(2, 3).gather(1, i.reshape(2, 1)), [0, 7]),
    "cross_entropy": (lambda i: F.cross_entropy(tg.ones(2, 3), i), [0, 5]),
    "index_select": (lambda i: tg.ones(2, 3).index_select(1, i), [3]),
    "getitem": (lambda i: tg.ones(2, 3)[i], [2]),
}


@pytest.mark.parametrize("backend", ["eager", "numpy", "triton"])
@pytest.mark.parametrize("name", sorted(BAD_INDICES))
def test_out_of_range_index_raises_naming_the_op_and_line(name, backend):
    fn, idx = BAD_INDICES[name]
    if backend != "eager":
        fn = tg.compile(fn, backend=backend)
    op = name.split(" ")[0].replace("index_select", "take").replace("getitem", "take")
    with pytest.raises(IndexError, match=rf"(?s){op}: .*out of range.*test_correctness_errors.py:\d+"):
        fn(tg.tensor(idx))


def test_ignore_index_is_not_out_of_range():
    for fn in (F.cross_entropy, tg.compile(F.cross_entropy)):
        assert np.isfinite(fn(tg.ones(2, 3), tg.tensor([0, -100])).item())


def test_layer_norm_shape_mismatch_names_the_line():
    with pytest.raises(tg.ShapeError, match=r"(?s)layer_norm: normalized_shape \[4\].*\[2, 3\].*"
                                            r"test_correctness_errors.py:\d+"):
        F.layer_norm(tg.ones(2, 3), (4,))


def test_a_tensor_leaked_out_of_a_step_is_named():
    leaked = []

    def step(x):
        y = x * 2
        leaked.append(y)
        return y.sum()

    tg.compile(step)(tg.ones(3))
    with pytest.raises(tg.TracegradError, match=r"(?s)mul: a tensor computed inside a compiled step.*"
                                                r"test_correctness_errors.py:\d+"):
        leaked[0] * 2.0
