"""`DistributedSampler`: each rank's share of the (shuffled) indices, padded to equal length."""
from __future__ import annotations

import math

import numpy as np

from .sampler import Sampler
from ... import distributed as dist


class DistributedSampler(Sampler):
    """Rank `rank` of `num_replicas` takes every num_replicas-th index of the epoch's order; the
    order is a function of `seed` and the epoch set with `set_epoch` (as in PyTorch)."""

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        self.num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
        self.rank = dist.get_rank() if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"DistributedSampler: rank {self.rank} is not in [0, {self.num_replicas})")
        self.dataset, self.shuffle, self.seed, self.drop_last, self.epoch = dataset, shuffle, seed, drop_last, 0
        n = len(dataset)
        self.num_samples = n // self.num_replicas if drop_last else math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n).tolist() if self.shuffle \
            else list(range(n))
        if self.total_size > n:
            order += (order * math.ceil(self.total_size / n))[: self.total_size - n]
        return iter(order[: self.total_size][self.rank::self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples
