"""Samplers in PyTorch's terms: which indices a `DataLoader` draws, lazily, one at a time.

    SequentialSampler(ds)                      # 0, 1, 2, ...
    RandomSampler(ds, generator=g)             # a permutation per epoch, from the seed alone
    BatchSampler(sampler, 32, drop_last=True)  # lists of 32 indices

The shuffle order of epoch k depends only on the seed (from `generator`, `seed=`, or one draw from
tracegrad's global RNG when iteration starts, as in PyTorch) and k.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np

from .dataset import _seed_from


class Sampler:
    """Base class: `__iter__` yields indices (or lists of them); `__len__` when known."""

    def __init__(self, data_source=None):
        pass

    def __iter__(self) -> Iterator:
        raise NotImplementedError(f"{type(self).__name__} must implement __iter__")


class SequentialSampler(Sampler):
    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """A random order of the dataset's indices; with `replacement`, `num_samples` independent draws."""

    def __init__(self, data_source, replacement: bool = False, num_samples: int | None = None, generator=None,
                 seed: int | None = None):
        self.data_source, self.replacement, self._num_samples = data_source, replacement, num_samples
        self.generator, self.seed, self.epoch = generator, seed, 0
        if num_samples is not None and (not isinstance(num_samples, int) or num_samples <= 0):
            raise ValueError(f"num_samples should be a positive integer, got {num_samples!r}")

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        seed = _seed_from(self.generator, self.seed) & (2 ** 63 - 1)
        rng = np.random.default_rng([seed, self.epoch])
        self.epoch += 1
        n = len(self.data_source)
        if self.replacement:
            for at in range(0, self.num_samples, 1024):     # draws in blocks: lazy, and cheap per index
                yield from rng.integers(0, n, size=min(1024, self.num_samples - at)).tolist()
            return
        for at in range(0, self.num_samples, n):
            yield from rng.permutation(n)[: self.num_samples - at].tolist()

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given indices in a random order."""

    def __init__(self, indices: Sequence[int], generator=None):
        self.indices, self.generator = list(indices), generator

    def __iter__(self):
        rng = np.random.default_rng(_seed_from(self.generator) & (2 ** 63 - 1))
        return (self.indices[i] for i in rng.permutation(len(self.indices)).tolist())

    def __len__(self) -> int:
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """`num_samples` indices drawn with probability proportional to `weights`."""

    def __init__(self, weights, num_samples: int, replacement: bool = True, generator=None):
        w = np.asarray(weights.numpy() if hasattr(weights, "numpy") else weights, dtype=np.float64)
        self.p, self.num_samples, self.replacement, self.generator = w / w.sum(), num_samples, replacement, generator

    def __iter__(self):
        rng = np.random.default_rng(_seed_from(self.generator) & (2 ** 63 - 1))
        return iter(rng.choice(len(self.p), self.num_samples, replace=self.replacement, p=self.p).tolist())

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler):
    """Groups another sampler's indices into lists of `batch_size`, lazily."""

    def __init__(self, sampler: Iterable, batch_size: int, drop_last: bool):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer, got {batch_size!r}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last

    def __iter__(self):
        batch = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
