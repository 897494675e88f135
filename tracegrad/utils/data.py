"""`Dataset` and `DataLoader` in PyTorch's terms: map-style datasets, batching, shuffling with
deterministic seeds, and `num_workers` background threads that fetch batches ahead, in order.

    ds = TensorDataset(tg.randn(100, 8), tg.randint(0, 3, (100,)))
    loader = DataLoader(ds, batch_size=16, shuffle=True, num_workers=2, generator=tg.Generator(0))
    for x, y in loader:          # x: f32[16, 8], y: i64[16]
        ...

The shuffle order of epoch k depends only on the seed (from `generator`, `seed=`, or else one draw
from tracegrad's global RNG when iteration starts, as in PyTorch), never on `num_workers`.
Workers are threads, not processes: collation is mostly numpy, which releases the GIL.
"""
from __future__ import annotations

import bisect
import itertools
import math
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

from ..tensor import Tensor


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
    from ..random import randint
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


def default_collate(batch):
    """A list of samples -> one batch: tensors/arrays/numbers stacked, tuples and dicts by field."""
    first = batch[0]
    if isinstance(first, Tensor):
        return _to_tensor(np.stack([b.numpy() for b in batch]), first.dtype)
    if isinstance(first, (np.ndarray, np.generic)):
        return _to_tensor(np.stack(batch))
    if isinstance(first, bool):
        return _to_tensor(np.array(batch, dtype=bool))
    if isinstance(first, int):
        return _to_tensor(np.array(batch, dtype=np.int64))
    if isinstance(first, float):
        return _to_tensor(np.array(batch, dtype=np.float32))
    if isinstance(first, (str, bytes)):
        return list(batch)
    if isinstance(first, dict):
        return {k: default_collate([b[k] for b in batch]) for k in first}
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(default_collate(list(f)) for f in zip(*batch)))
    if isinstance(first, (tuple, list)):
        return [default_collate(list(f)) for f in zip(*batch)]
    raise TypeError(f"default_collate: cannot batch samples of type {type(first).__name__}")


def _to_tensor(arr: np.ndarray, dtype=None) -> Tensor:
    from ..creation import tensor
    if dtype is None and arr.dtype == np.float64:
        arr = arr.astype(np.float32)       # float64 arrays usually mean "numbers", as in the model's dtype
    return tensor(arr, dtype=dtype)


class DataLoader:
    """Batches of a dataset; `num_workers > 0` fetches up to `prefetch_factor * num_workers`
    batches ahead on threads. Batches arrive in the same order whatever `num_workers` is."""

    def __init__(self, dataset: Dataset, batch_size: int | None = 1, shuffle: bool = False, sampler=None,
                 batch_sampler=None, num_workers: int = 0, collate_fn: Callable | None = None,
                 pin_memory: bool = False, drop_last: bool = False, timeout: float = 0,
                 worker_init_fn: Callable | None = None, generator=None, prefetch_factor: int | None = None,
                 persistent_workers: bool = False, seed: int | None = None):
        if num_workers < 0:
            raise ValueError("num_workers must be >= 0")
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.sampler, self.batch_sampler = sampler, batch_sampler
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor or 2
        self.collate_fn = collate_fn or (default_collate if batch_size is not None or batch_sampler else (lambda x: x))
        self.worker_init_fn, self.generator, self.seed, self.timeout = worker_init_fn, generator, seed, timeout or None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose which epoch's shuffle order the next iteration uses."""
        self.epoch = epoch

    def _index_batches(self) -> list[list[int]]:
        """This epoch's batches of indices (decided when iteration starts, as in PyTorch)."""
        if self.batch_sampler is not None:
            return [list(b) for b in self.batch_sampler]
        if self.sampler is not None:
            order = list(iter(self.sampler))
        elif self.shuffle:
            seed = _seed_from(self.generator, self.seed) & (2 ** 63 - 1)
            order = np.random.default_rng([seed, self.epoch]).permutation(len(self.dataset)).tolist()
        else:
            order = list(range(len(self.dataset)))
        if self.batch_size is None:
            return [[i] for i in order]
        out = [order[at:at + self.batch_size] for at in range(0, len(order), self.batch_size)]
        return out[:-1] if out and self.drop_last and len(out[-1]) < self.batch_size else out

    def _fetch(self, indices: list[int]):
        if self.batch_size is None and self.batch_sampler is None:
            return self.collate_fn(self.dataset[indices[0]])
        return self.collate_fn([self.dataset[i] for i in indices])

    def __iter__(self):
        if isinstance(self.dataset, IterableDataset):
            gen = self._iter_stream()
        elif self.num_workers == 0:
            gen = (self._fetch(b) for b in self._index_batches())
        else:
            gen = self._iter_threads(self._index_batches())
        self.epoch += 1
        return gen

    def _iter_stream(self):
        buf = []
        for sample in self.dataset:
            if self.batch_size is None:
                yield self.collate_fn(sample)
                continue
            buf.append(sample)
            if len(buf) == self.batch_size:
                yield self.collate_fn(buf)
                buf = []
        if buf and not self.drop_last and self.batch_size is not None:
            yield self.collate_fn(buf)

    def _iter_threads(self, batches: list[list[int]]):
        # NOTE: futures are consumed in submission order, so the batch order is the sampler's order.
        pending: queue.Queue = queue.Queue()
        local, ids = threading.local(), itertools.count()

        def work(indices):
            if self.worker_init_fn is not None and not hasattr(local, "id"):
                local.id = next(ids)           # worker ids 0..num_workers-1, as in PyTorch
                self.worker_init_fn(local.id)
            return self._fetch(indices)

        with ThreadPoolExecutor(self.num_workers, thread_name_prefix="tracegrad-loader") as pool:
            batches = iter(batches)
            for b in batches:
                pending.put(pool.submit(work, b))
                if pending.qsize() >= self.num_workers * self.prefetch_factor:
                    break
            while not pending.empty():
                fut = pending.get()
                nxt = next(batches, None)
                if nxt is not None:
                    pending.put(pool.submit(work, nxt))
                yield fut.result(timeout=self.timeout)

    def __len__(self) -> int:
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        n = len(self.sampler) if self.sampler is not None and hasattr(self.sampler, "__len__") else len(self.dataset)
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class DistributedSampler:
    """The indices of one rank's share of a dataset, as torch.utils.data.DistributedSampler: each of
    `num_replicas` ranks (default: the process group's) gets every num_replicas-th index of one
    order (shuffled by `seed + epoch` when `shuffle`), padded by repeating the first indices so
    all get the same count (or cut to it with `drop_last`). Call `set_epoch(k)` each epoch.

        sampler = DistributedSampler(ds)           # under `tracegrad launch -n 2`
        loader = DataLoader(ds, batch_size=8, sampler=sampler)
    """

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        from .. import distributed
        self.dataset = dataset
        self.num_replicas = distributed.get_world_size() if num_replicas is None else num_replicas
        self.rank = distributed.get_rank() if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"DistributedSampler: invalid rank {self.rank}, rank should be in [0, "
                             f"{self.num_replicas - 1}]")
        self.shuffle, self.seed, self.drop_last, self.epoch = shuffle, seed, drop_last, 0
        n = len(dataset)
        self.num_samples = n // self.num_replicas if drop_last else math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self):
        n = len(self.dataset)
        order = (np.random.default_rng(self.seed + self.epoch).permutation(n) if self.shuffle
                 else np.arange(n)).tolist()
        if self.total_size > n:
            order += (order * math.ceil(self.total_size / max(n, 1)))[:self.total_size - n]
        order = order[:self.total_size]
        return iter(order[self.rank:self.total_size:self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
