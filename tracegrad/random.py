"""Random sampling: rand, randn, randint, randperm, multinomial, topk, drawn from the current
generator (`generator.py`)."""
from __future__ import annotations

import numpy as np

from .creation import arange, ones, tensor
from .functions import TopkResult, cat, sum as _sum, where
from .generator import (Generator, current_generator, default_generator, get_rng_state, manual_seed, seed,
                        set_rng_state, use_generator)
from .ir.types import int64


def _size(size):
    return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)


def rand(*size, dtype=None, device=None, generator=None, requires_grad=False):
    t = (generator or current_generator()).draw("rand_uniform", _size(size), dtype, device)
    return t.requires_grad_(True) if requires_grad else t


def randn(*size, dtype=None, device=None, generator=None, requires_grad=False):
    t = (generator or current_generator()).draw("rand_normal", _size(size), dtype, device)
    return t.requires_grad_(True) if requires_grad else t


def rand_like(t, *, dtype=None, device=None):
    return rand(*t.shape, dtype=dtype or t.dtype, device=device or t.device)


def randn_like(t, *, dtype=None, device=None):
    return randn(*t.shape, dtype=dtype or t.dtype, device=device or t.device)


def randint(low, high=None, size=None, *, dtype=None, device=None, generator=None, requires_grad=False):
    """Integers uniform in [low, high): PyTorch's `randint(high, size)` and `randint(low, high, size)`."""
    if isinstance(high, (tuple, list)):          # randint(high, size)
        if size is not None:
            raise TypeError(f"randint: size given twice ({high!r} and {size!r})")
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    if size is None:
        raise TypeError("randint() missing the argument 'size' (a tuple of ints): randint(high, size) or "
                        "randint(low, high, size)")
    if int(high) <= int(low):
        raise ValueError(f"randint: expected low < high, got low={low}, high={high}")
    u = rand(*_size((size,) if isinstance(size, int) else size), device=device, generator=generator)
    return (u * (high - low)).floor().to(dtype or int64) + low


def normal(mean=0.0, std=1.0, size=None, *, generator=None, dtype=None, device=None, out=None):
    """Samples of N(mean, std^2): tensors broadcast together, or floats with `size`, as torch.normal."""
    from .tensor import Tensor   # NOTE: tensor.py imports this module
    like = mean if isinstance(mean, Tensor) else std if isinstance(std, Tensor) else None
    if like is not None:
        shape = tuple(np.broadcast_shapes(tuple(getattr(mean, "shape", ())), tuple(getattr(std, "shape", ()))))
        z = randn(*shape, dtype=dtype or like.dtype, device=device or like.device, generator=generator)
    else:
        if size is None:
            raise TypeError("normal(mean: float, std: float) needs size=")
        z = randn(*_size((size,) if isinstance(size, int) else size), dtype=dtype, device=device, generator=generator)
    return z * std + mean


def randperm(n: int, *, dtype=None, device=None, generator=None):
    """A random permutation (eager only: sorting is not an op of the IR)."""
    keys = rand(n, device=device, generator=generator)
    return tensor(np.argsort(keys.numpy(), kind="stable"), dtype=dtype or int64, device=keys.device)


def multinomial(probs, num_samples: int, replacement: bool = False, *, generator=None):
    """Sample category indices from (unnormalized) probabilities along the last axis.

    With replacement: inverse-CDF sampling. Without: the Gumbel-top-k trick.
    """
    p = probs / _sum(probs, -1, keepdim=True)
    lead = p.shape[:-1]
    if replacement or num_samples == 1:
        u = rand(*lead, num_samples, device=probs.device, generator=generator)
        cdf = _cumsum_last(p)
        # index = number of cdf entries below u
        return _sum((cdf.unsqueeze(-2) < u.unsqueeze(-1)).to(int64), -1).clamp(max=p.shape[-1] - 1)
    g = -(-(rand(*p.shape, device=probs.device, generator=generator) + 1e-20).log() + 1e-20).log()
    return topk(p.log() + g, num_samples)[1]


def _cumsum_last(p):
    """Prefix sums along the last axis as a matmul with an upper-triangular ones matrix."""
    n = p.shape[-1]
    tri = ones(n, n, dtype=p.dtype, device=p.device).triu()
    return p @ tri


def topk(x, k: int, dim: int = -1, largest: bool = True, sorted: bool = True):
    """(values, indices) of the k largest entries along `dim`, by k rounds of argmax."""
    dim = dim % x.ndim
    y = x if largest else -x
    vals, idxs = [], []
    work = y
    for _ in range(k):
        i = work.argmax(dim, keepdim=True)
        vals.append(y.gather(dim, i))
        idxs.append(i)
        hit = _onehot_like(work, i, dim)
        work = where(hit, float("-inf"), work)
    values, indices = cat(vals, dim), cat(idxs, dim)
    return TopkResult(values if largest else -values, indices)


def _onehot_like(x, i, dim):
    pos = arange(x.shape[dim], device=x.device).reshape(*[-1 if a == dim else 1 for a in range(x.ndim)])
    return pos == i
