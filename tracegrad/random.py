"""Random numbers: one global generator whose state is a tensor i64[2] = (seed, offset); each
rank that `tg.distributed.run_local` starts as a thread has a generator of its own.

Every draw is a random op that reads the state and returns the advanced one, so a compiled step
lifts the state like any other tensor and writes it back: compiled and eager runs draw the same
numbers in the same order.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from .dispatch import apply
from .ir.types import TensorType, dtype as to_dtype, int64


class Generator:
    def __init__(self, seed: int = 0):
        from .tensor import Tensor
        self.state = Tensor._from_array(np.array([seed, 0], dtype=np.int64), TensorType((2,), int64))
        self.state._name = "rng"
        self.device_states: dict[str, object] = {}   # one state per CUDA device, as PyTorch keeps

    def manual_seed(self, seed: int) -> "Generator":
        from . import trace
        with trace.suspended():
            self.state._data = np.array([int(seed), 0], dtype=np.int64)
            for dev, st in self.device_states.items():
                st._assign(self.state.to(dev))
        return self

    def state_for(self, device: str):
        """The state tensor that draws on `device` read and advance (made eagerly the first time)."""
        if device == "cpu":
            return self.state
        if device not in self.device_states:
            from . import trace
            with trace.suspended():
                st = self.state.detach().to(device)
            st._name = f"rng_{device.replace(':', '')}"
            self.device_states[device] = st
        return self.device_states[device]

    def initial_seed(self) -> int:
        return int(np.asarray(self.state._data)[0])

    def get_state(self):
        return self.state.detach()

    def set_state(self, state) -> None:
        self.state._data = np.array(np.asarray(state.numpy()), dtype=np.int64)

    def draw(self, op: str, shape, dtype, device):
        from .creation import get_default_dtype, normalize_device
        state = self.state_for(normalize_device(device))
        sample, nxt = apply(op, state, shape=tuple(shape), dtype=to_dtype(dtype or get_default_dtype()))
        state._assign(nxt)
        return sample


default_generator = Generator(0)
_local = threading.local()


def current_generator() -> Generator:
    """`default_generator`, or the generator this thread was given (a rank of `run_local`)."""
    return getattr(_local, "generator", None) or default_generator


@contextlib.contextmanager
def use_generator(gen: Generator):
    old = getattr(_local, "generator", None)
    _local.generator = gen
    try:
        yield gen
    finally:
        _local.generator = old


def manual_seed(seed: int) -> Generator:
    return current_generator().manual_seed(seed)


def seed() -> int:
    import time
    s = int(time.time_ns() % (1 << 62))
    manual_seed(s)
    return s


def get_rng_state():
    return current_generator().get_state()


def set_rng_state(state) -> None:
    current_generator().set_state(state)


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
    from .creation import tensor
    keys = rand(n, device=device, generator=generator)
    return tensor(np.argsort(keys.numpy(), kind="stable"), dtype=dtype or int64, device=keys.device)


def multinomial(probs, num_samples: int, replacement: bool = False, *, generator=None):
    """Sample category indices from (unnormalized) probabilities along the last axis.

    With replacement: inverse-CDF sampling. Without: the Gumbel-top-k trick.
    """
    from .functions import sum as _sum
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
    from .creation import ones
    n = p.shape[-1]
    tri = ones(n, n, dtype=p.dtype, device=p.device).triu()
    return p @ tri


def topk(x, k: int, dim: int = -1, largest: bool = True, sorted: bool = True):
    """(values, indices) of the k largest entries along `dim`, by k rounds of argmax."""
    from .functions import TopkResult as MaxResult
    from .functions import where
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
    from .functions import cat
    values, indices = cat(vals, dim), cat(idxs, dim)
    return MaxResult(values if largest else -values, indices)


def _onehot_like(x, i, dim):
    from .creation import arange
    pos = arange(x.shape[dim], device=x.device).reshape(*[-1 if a == dim else 1 for a in range(x.ndim)])
    return pos == i
