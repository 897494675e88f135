"""tracegrad.utils.data as torch.utils.data lays it out; the DataLoader draws its indices lazily."""
import itertools

import numpy as np
import pytest
import torch

import tracegrad as tg
from tracegrad.utils import data as tgdata


def test_layout_matches_torch():
    for name in ("DataLoader", "Dataset", "IterableDataset", "TensorDataset", "Subset", "ConcatDataset",
                 "random_split", "Sampler", "SequentialSampler", "RandomSampler", "BatchSampler",
                 "SubsetRandomSampler", "WeightedRandomSampler", "default_collate", "get_worker_info"):
        assert hasattr(torch.utils.data, name) and hasattr(tgdata, name), name
    assert tgdata.dataloader.DataLoader is tgdata.DataLoader
    assert tgdata.distributed.DistributedSampler is tgdata.DistributedSampler
    from tracegrad.utils.data.dataloader import default_collate  # noqa: F401  (as scripts import it)


class Forever(tgdata.Sampler):
    def __iter__(self):
        return itertools.count()


class Squares(tgdata.Dataset):
    def __getitem__(self, i):
        return np.float32(i * i)

    def __len__(self):
        return 10 ** 12


def test_infinite_sampler_yields_at_once():
    loader = tgdata.DataLoader(Squares(), batch_size=4, sampler=Forever())
    first = next(iter(loader))
    np.testing.assert_array_equal(first.numpy(), [0, 1, 4, 9])
    huge = tgdata.DataLoader(Squares(), batch_size=2, shuffle=True, seed=0)   # a 1e12-row shuffle is not listed
    assert len(huge) == 5 * 10 ** 11


def test_samplers_as_in_torch():
    ds = list(range(10))
    assert list(tgdata.SequentialSampler(ds)) == list(torch.utils.data.SequentialSampler(ds))
    assert list(tgdata.BatchSampler(range(10), 3, drop_last=False)) == \
        list(torch.utils.data.BatchSampler(range(10), 3, drop_last=False))
    assert list(tgdata.BatchSampler(range(10), 3, drop_last=True)) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    order = list(tgdata.RandomSampler(ds, seed=1))
    assert sorted(order) == ds and len(tgdata.RandomSampler(ds, num_samples=25, replacement=True)) == 25
    assert len(list(tgdata.RandomSampler(ds, num_samples=25, replacement=True, seed=0))) == 25
    with pytest.raises(ValueError, match="batch_size"):
        tgdata.BatchSampler(ds, 0, False)


def test_batch_sampler_and_subset_loader():
    x = tg.arange(10)
    ds = tgdata.TensorDataset(x)
    loader = tgdata.DataLoader(ds, batch_sampler=tgdata.BatchSampler(tgdata.SequentialSampler(ds), 4, False))
    assert [b[0].tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    a, b = tgdata.random_split(ds, [0.7, 0.3], generator=tg.Generator(0))
    assert len(a) == 7 and len(b) == 3 and isinstance(a, tgdata.Subset)
    with pytest.raises(ValueError, match="mutually exclusive"):
        tgdata.DataLoader(ds, sampler=tgdata.SequentialSampler(ds), shuffle=True)


def test_distributed_sampler_splits_ranks():
    ds = list(range(10))
    parts = [list(tgdata.DistributedSampler(ds, num_replicas=3, rank=r, shuffle=False)) for r in range(3)]
    assert parts == [list(torch.utils.data.DistributedSampler(ds, num_replicas=3, rank=r, shuffle=False))
                     for r in range(3)]
