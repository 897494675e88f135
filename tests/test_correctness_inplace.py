"""Views and in-place updates as PyTorch has them: an in-place op on a view (`a[0]`, `a.t()`,
`a.view(-1)`, `a.data[...]`) reaches its base, index assignment broadcasts against the indexed
shape, and donating a view never gives up its base."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tracegrad as tg

from torch_compare import close


def _a(m):
    return m.tensor(np.arange(6.0).reshape(2, 3))


def _set_view(a):
    a.view(-1)[0] = 5


def _set_col(a):
    a[:, 0] = a.new_tensor([7.0, 8.0])


def _set_plane(a):
    a[1, :] = a.new_tensor([1.0, 2.0, 3.0])


UPDATES = {
    "a[0].add_(1)": lambda a: a[0].add_(1),
    "a[:, 1].zero_()": lambda a: a[:, 1].zero_(),
    "a.t().mul_(2)": lambda a: a.t().mul_(2),
    "a.view(-1)[0] = 5": _set_view,
    "a.data[:, 0].fill_(7)": lambda a: a.data[:, 0].fill_(7),
    "a[1][2] += 4": lambda a: a[1].__setitem__(2, a[1][2] + 4),
    "a.unsqueeze(0)[0, 1] -= 3": lambda a: a.unsqueeze(0)[0, 1].sub_(3),
    "a[:, 0] = v": _set_col,
    "a[1, :] = v": _set_plane,
    "a[..., 1:].clamp_(max=2)": lambda a: a[..., 1:].clamp_(max=2),
}


@pytest.mark.parametrize("name", sorted(UPDATES))
def test_in_place_on_a_view_reaches_the_base(name):
    a, at = _a(tg), _a(torch)
    UPDATES[name](a)
    UPDATES[name](at)
    close(a, at)


@pytest.mark.parametrize("name", ["a[0].add_(1)", "a.t().mul_(2)", "a[:, 0] = v"])
def test_in_place_on_a_view_inside_compile(name):
    step = tg.compile(lambda a: UPDATES[name](a))
    a, at = _a(tg), _a(torch)
    step(a)
    UPDATES[name](at)
    close(a, at)


def test_index_assignment_drops_integer_axes():
    a = tg.zeros(2, 3, 4)
    a[0, :, 1] = tg.tensor([1.0, 2.0, 3.0])
    at = torch.zeros(2, 3, 4)
    at[0, :, 1] = torch.tensor([1.0, 2.0, 3.0])
    close(a, at)


def test_donating_a_view_leaves_its_base_alone():
    base = tg.ones(2, 3)
    f = tg.compile(lambda x: (x * 3.0).exp(), donate="x")
    out = f(base[0:1])
    np.testing.assert_array_equal(base.numpy(), np.ones((2, 3), np.float32))
    close(out, np.full((1, 3), np.exp(3.0)), rtol=1e-6)
