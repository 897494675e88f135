"""Datasets in PyTorch's terms: map-style (`__getitem__`/`__len__`) and iterable, `TensorDataset`,
`Subset`, `ConcatDataset`, and `random_split` with a deterministic seed."""
from __future__ import annotations

import bisect
import math
from typing import Sequence

import numpy as np

from ...tensor import Tensor
from ...random import randint


class Dataset:
    """A map-style dataset: `__getitem__(i)` and `__len__`."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")

    def __add__(self, other: "Dataset") -> "ConcatDataset":
        return ConcatDataset([self, other])


class IterableDataset(Dataset):
    """A stream of samples: `__iter__`. Batched in order; `shuffle` does not apply."""

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} must implement __iter__")


class TensorDataset(Dataset):
    """Samples are the i-th rows of the given tensors (or arrays)."""

    def __init__(self, *tensors):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("TensorDataset needs tensors with one first dimension")
        self.tensors = tensors
        self._arrays = [t.numpy() if isinstance(t, Tensor) else np.asarray(t) for t in tensors]

    def __getitem__(self, index):
        return tuple(a[index] for a in self._arrays)

    def __len__(self) -> int:
        return len(self._arrays[0])


class Subset(Dataset):
    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        self.dataset, self.indices = dataset, list(indices)

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]

    def __len__(self) -> int:
        return len(self.indices)


class ConcatDataset(Dataset):
    def __init__(self, datasets):
        self.datasets = list(datasets)
        self.ends = list(np.cumsum([len(d) for d in self.datasets]))

    def __getitem__(self, index):
        if index < 0:
            index += len(self)
        k = bisect.bisect_right(self.ends, index)
        return self.datasets[k][index - (self.ends[k - 1] if k else 0)]

    def __len__(self) -> int:
        return int(self.ends[-1]) if self.ends else 0


def _seed_from(generator=None, seed=None) -> int:
    if seed is not None:
        return int(seed)
    if generator is not None:   # a tracegrad Generator: its seed and how far it has been drawn
        s = np.asarray(generator.state.numpy())
        return int(s[0]) * 1_000_003 + int(s[1])
    return int(randint(0, 2 ** 62, ()).item())   # one draw from the global RNG, as PyTorch does


def random_split(dataset: Dataset, lengths: Sequence[float], generator=None, seed=None) -> list[Subset]:
    """Split into non-overlapping subsets of the given lengths (or fractions summing to 1)."""
    n = len(dataset)
    if all(0 <= x <= 1 for x in lengths) and math.isclose(sum(lengths), 1.0) and sum(lengths) != n:
        counts = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
    else:
        counts = [int(x) for x in lengths]
    if sum(counts) != n:
        raise ValueError(f"lengths {list(lengths)} do not add up to the dataset's length {n}")
    perm = np.random.default_rng(_seed_from(generator, seed)).permutation(n)
    out, at = [], 0
    for c in counts:
        out.append(Subset(dataset, perm[at:at + c].tolist()))
        at += c
    return out
