"""Data loading, tokenizers and token files: batching, shuffling, seeds, threads, resumption."""
import json

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.utils.data import DataLoader, Dataset, TensorDataset, random_split
from tracegrad.utils.token_dataset import TokenDataset, prepare_token_files
from tracegrad.utils.tokenizers import BPETokenizer, CharTokenizer, load_tokenizer


class Squares(Dataset):
    def __len__(self):
        return 23

    def __getitem__(self, i):
        return {"x": np.full(3, i, dtype=np.float32), "y": i * i}


def _ids(loader):
    return [b["y"].numpy().tolist() for b in loader]


def test_batching_and_collate():
    batches = list(DataLoader(Squares(), batch_size=5))
    assert len(batches) == 5 and len(DataLoader(Squares(), batch_size=5)) == 5
    assert batches[0]["x"].shape == (5, 3) and batches[0]["x"].dtype == tg.float32
    assert batches[0]["y"].dtype == tg.int64 and batches[-1]["y"].shape == (3,)
    assert len(list(DataLoader(Squares(), batch_size=5, drop_last=True))) == 4


def test_shuffle_is_deterministic_and_independent_of_workers():
    order = [_ids(DataLoader(Squares(), batch_size=4, shuffle=True, seed=7, num_workers=w)) for w in (0, 1, 3)]
    assert order[0] == order[1] == order[2]
    flat = sorted(v for b in order[0] for v in b)
    assert flat == [i * i for i in range(23)] and order[0] != _ids(DataLoader(Squares(), batch_size=4))
    loader = DataLoader(Squares(), batch_size=4, shuffle=True, generator=tg.Generator(3))
    e0, e1 = _ids(loader), _ids(loader)
    assert e0 != e1                                  # a new order each epoch ...
    loader.set_epoch(0)
    assert _ids(loader) == e0                        # ... reproducible by epoch number


def test_global_seed_drives_shuffle():
    tg.manual_seed(0)
    a = _ids(DataLoader(Squares(), batch_size=6, shuffle=True))
    tg.manual_seed(0)
    assert _ids(DataLoader(Squares(), batch_size=6, shuffle=True)) == a


def test_tensor_dataset_and_split():
    x, y = tg.randn(10, 2), tg.arange(10)
    xb, yb = next(iter(DataLoader(TensorDataset(x, y), batch_size=4)))
    np.testing.assert_array_equal(xb.numpy(), x.numpy()[:4])
    assert yb.tolist() == [0, 1, 2, 3]
    a, b = random_split(TensorDataset(x, y), [0.7, 0.3], seed=1)
    assert len(a) == 7 and len(b) == 3
    assert sorted([int(a[i][1]) for i in range(7)] + [int(b[i][1]) for i in range(3)]) == list(range(10))


TEXT = "the quick brown fox jumps over the lazy dog. " * 20 + "naïve café_au_lait 123 ☃\n\n  end"


def test_char_tokenizer(tmp_path):
    tok = CharTokenizer.train(TEXT)
    assert tok.decode(tok.encode(TEXT)) == TEXT and tok.vocab_size == len(set(TEXT))
    tok.save(tmp_path / "t.json")
    assert load_tokenizer(tmp_path / "t.json").encode("fox") == tok.encode("fox")
    with pytest.raises(ValueError, match="not in this tokenizer"):
        tok.encode("Z")


def test_bpe_tokenizer(tmp_path):
    (tmp_path / "c.txt").write_text(TEXT, encoding="utf-8")
    tok = BPETokenizer.train_from_file(tmp_path / "c.txt", vocab_size=300, special_tokens=["<|endoftext|>"])
    assert tok.vocab_size == 300
    ids = tok.encode(TEXT)
    assert len(ids) < len(TEXT.encode()) / 2 and tok.decode(ids) == TEXT
    other = "unseen Ünïcode ✓<|endoftext|>x"
    assert tok.decode(tok.encode(other)) == other and tok.encode(other)[-2] == 299
    tok.save(tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text())["type"] == "byte_bpe"
    again = load_tokenizer(tmp_path / "t.json")
    assert again.encode(TEXT) == ids
    assert BPETokenizer.train(TEXT, 300, special_tokens=["<|endoftext|>"]).merges == tok.merges   # deterministic


def test_token_dataset_batches_and_resume(tmp_path):
    tok = CharTokenizer.train(TEXT)
    meta = prepare_token_files(TEXT, tok, tmp_path, val_fraction=0.2)
    assert meta["vocab_size"] == tok.vocab_size
    ds = TokenDataset(tmp_path, block_size=8, batch_size=4, seed=5)
    x, y = ds.get_batch("train")
    assert x.shape == (4, 8) and x.dtype == tg.int64
    np.testing.assert_array_equal(x.numpy()[:, 1:], y.numpy()[:, :-1])
    text = tok.decode(x.numpy()[0])
    assert text in TEXT
    ds.get_batch("train"), ds.get_batch("val")
    state = ds.state_dict()
    nxt = ds.get_batch_numpy("train")
    fresh = TokenDataset(tmp_path, block_size=8, batch_size=4, seed=0)
    fresh.load_state_dict(json.loads(json.dumps(state)))
    np.testing.assert_array_equal(fresh.get_batch_numpy("train")[0], nxt[0])
    assert ds.tokenizer().decode(tok.encode("fox")) == "fox"
    assert 0 < ds.unigram_loss() < np.log(tok.vocab_size) + 1


def test_worker_init_fn_gets_worker_ids():
    seen = []
    loader = DataLoader(Squares(), batch_size=2, num_workers=3, worker_init_fn=seen.append)
    assert len(list(loader)) == 12
    assert sorted(seen) == list(range(len(seen))) and 1 <= len(seen) <= 3
