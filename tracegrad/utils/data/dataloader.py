"""`DataLoader`: batches of a dataset drawn lazily from its sampler; `num_workers` background
threads fetch batches ahead, in order.

    ds = TensorDataset(tg.randn(100, 8), tg.randint(0, 3, (100,)))
    loader = DataLoader(ds, batch_size=16, shuffle=True, num_workers=2, generator=tg.Generator(0))
    for x, y in loader:          # x: f32[16, 8], y: i64[16]
        ...

Indices come from a `BatchSampler` over a `SequentialSampler` or `RandomSampler` (or the ones
given) one batch at a time, so an infinite or huge sampler yields its first batch at once. The
shuffle order of epoch k depends only on the seed, never on `num_workers`. Workers are threads,
not processes: collation is mostly numpy, which releases the GIL.
"""
from __future__ import annotations

import itertools
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from ...tensor import Tensor
from .dataset import Dataset, IterableDataset
from .sampler import BatchSampler, RandomSampler, SequentialSampler
from ...creation import tensor


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
    if dtype is None and arr.dtype == np.float64:
        arr = arr.astype(np.float32)       # float64 arrays usually mean "numbers", as in the model's dtype
    return tensor(arr, dtype=dtype)


class DataLoader:
    """Batches of a dataset; `num_workers > 0` fetches up to `prefetch_factor * num_workers`
    batches ahead on threads. Batches arrive in the same order whatever `num_workers` is."""

    def __init__(self, dataset: Dataset, batch_size: int | None = 1, shuffle: bool | None = None, sampler=None,
                 batch_sampler=None, num_workers: int = 0, collate_fn: Callable | None = None,
                 pin_memory: bool = False, drop_last: bool = False, timeout: float = 0,
                 worker_init_fn: Callable | None = None, multiprocessing_context=None, generator=None, *,
                 prefetch_factor: int | None = None, persistent_workers: bool = False,
                 pin_memory_device: str = "", in_order: bool = True, seed: int | None = None):
        if num_workers < 0:
            raise ValueError("num_workers must be >= 0")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler is mutually exclusive with shuffle")
        if batch_sampler is not None and (batch_size != 1 or shuffle or sampler is not None or drop_last):
            raise ValueError("DataLoader: batch_sampler is mutually exclusive with batch_size, shuffle, sampler "
                             "and drop_last")
        self.dataset, self.shuffle, self.drop_last = dataset, bool(shuffle), drop_last
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor or 2
        self.worker_init_fn, self.generator, self.seed, self.timeout = worker_init_fn, generator, seed, timeout or None
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.epoch = 0
        if isinstance(dataset, IterableDataset):
            self.sampler = sampler
        elif sampler is None:
            sampler = RandomSampler(dataset, generator=generator, seed=seed) if shuffle else SequentialSampler(dataset)
            self.sampler = sampler
        else:
            self.sampler = sampler
        if batch_sampler is not None:
            self.batch_size, self.batch_sampler = None, batch_sampler
        else:
            self.batch_size = batch_size
            self.batch_sampler = BatchSampler(self.sampler, batch_size, drop_last) \
                if batch_size is not None and not isinstance(dataset, IterableDataset) else None
        auto = batch_size is not None or batch_sampler is not None
        self.collate_fn = collate_fn or (default_collate if auto else (lambda x: x))

    def set_epoch(self, epoch: int) -> None:
        """Choose which epoch's shuffle order the next iteration uses."""
        self.epoch = epoch

    def _index_batches(self):
        """This epoch's batches of indices, drawn lazily from the samplers."""
        if isinstance(self.sampler, RandomSampler):
            self.sampler.set_epoch(self.epoch)
        if self.batch_sampler is not None:
            return (list(b) for b in self.batch_sampler)
        return ([i] for i in self.sampler)

    def _fetch(self, indices: list[int]):
        if self.batch_sampler is None:
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
        if isinstance(self.dataset, IterableDataset):
            raise TypeError("an IterableDataset's DataLoader has no len()")
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        return len(self.sampler)


def get_worker_info():
    """None: workers are threads of this process, so the main-process code path applies."""
    return None
