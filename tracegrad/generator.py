"""The random generator: one global generator whose state is a tensor i64[2] = (seed, offset);
each rank that `tg.distributed.run_local` starts as a thread has a generator of its own.

Every draw is a random op that reads the state and returns the advanced one, so a compiled step
lifts the state like any other tensor and writes it back: compiled and eager runs draw the same
numbers in the same order. The sampling functions built on it live in `random.py`.
"""
from __future__ import annotations

import contextlib
import threading
import time

import numpy as np

from . import tensor as _tensor, trace
from .creation import get_default_dtype, normalize_device
from .dispatch import apply
from .ir.types import TensorType, dtype as to_dtype, int64
from .threads import apply_default


class Generator:
    """A stream of random numbers: its state is a tensor i64[2] = (seed, offset)."""

    def __init__(self, seed: int = 0):
        self.state = _tensor.Tensor._from_array(np.array([seed, 0], dtype=np.int64), TensorType((2,), int64))
        self.state._name = "rng"
        self.seed = int(seed)
        self.device_states: dict[str, object] = {}   # one state per CUDA device, as PyTorch keeps

    def manual_seed(self, seed: int) -> "Generator":
        self.seed = int(seed)
        with trace.suspended():
            self.state._data = np.array([self.seed, 0], dtype=np.int64)
            for dev, st in self.device_states.items():
                st._assign(self.state.to(dev))
        return self

    def state_for(self, device: str):
        """The state tensor that draws on `device` read and advance (made eagerly the first time).

        A device's stream starts at (seed, 0) whatever the CPU stream has drawn since the seed was
        set, as PyTorch's CUDA generators do: a model built on the CPU and moved to the GPU draws
        the same dropout masks however many numbers its initialization took."""
        if device == "cpu":
            return self.state
        if device not in self.device_states:
            with trace.suspended():
                fresh = _tensor.Tensor._from_array(np.array([self.seed, 0], dtype=np.int64), TensorType((2,), int64))
                st = fresh.to(device)
            st._name = f"rng_{device.replace(':', '')}"
            self.device_states[device] = st
        return self.device_states[device]

    def initial_seed(self) -> int:
        return self.seed

    def get_state(self):
        return self.state.detach()

    def set_state(self, state) -> None:
        self.state._data = np.array(np.asarray(state.numpy()), dtype=np.int64)

    def draw(self, op: str, shape, dtype, device):
        apply_default()          # the CPU draws split over tg.set_num_threads' threads
        state = self.state_for(normalize_device(device))
        sample, nxt = apply(op, state, shape=tuple(shape), dtype=to_dtype(dtype or get_default_dtype()))
        state._assign(nxt)
        return sample


_local = threading.local()
_default: list[Generator] = []     # made on first use: a Generator holds a Tensor


def default_generator() -> Generator:
    """The process' generator (seed 0 until `manual_seed`)."""
    if not _default:
        _default.append(Generator(0))
    return _default[0]


def current_generator() -> Generator:
    """The default generator, or the generator this thread was given (a rank of `run_local`)."""
    return getattr(_local, "generator", None) or default_generator()


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
    s = int(time.time_ns() % (1 << 62))
    manual_seed(s)
    return s


def get_rng_state():
    return current_generator().get_state()


def set_rng_state(state) -> None:
    current_generator().set_state(state)
