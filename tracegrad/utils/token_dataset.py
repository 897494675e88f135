"""A token file dataset like nanoGPT's: `train.bin` / `val.bin` of uint16 token ids, memory-mapped,
with random (x, y) batches of contiguous blocks.

    meta = prepare_token_files(text, tokenizer, "data/topics")   # writes train.bin, val.bin, meta.json
    ds = TokenDataset("data/topics", block_size=64, batch_size=16, seed=1337)
    x, y = ds.get_batch("train")        # i64[16, 64] each; y is x shifted by one token
    state = ds.state_dict()             # {"seed": 1337, "position": {"train": 1, "val": 0}}
    ds.load_state_dict(state)           # the next batches are the ones an unbroken run would draw

Batch k of a split is drawn from `np.random.default_rng([seed, split, k])`, so the position is one
counter per split and resuming is exact without storing any generator state.
"""
from __future__ import annotations

import json
import os

import numpy as np
from .tokenizers import tokenizer_from_dict
from ..creation import tensor

SPLITS = ("train", "val")


def prepare_token_files(text: str, tokenizer, out_dir: str, val_fraction: float = 0.1) -> dict:
    """Tokenize `text`, split it (the last `val_fraction` is validation) and write the files."""
    if tokenizer.vocab_size > 65536:
        raise ValueError(f"uint16 token files hold ids < 65536; this tokenizer has {tokenizer.vocab_size}")
    os.makedirs(out_dir, exist_ok=True)
    ids = np.asarray(tokenizer.encode(text), dtype=np.uint16)
    cut = int(len(ids) * (1.0 - val_fraction))
    for split, part in zip(SPLITS, (ids[:cut], ids[cut:])):
        tmp = os.path.join(out_dir, f".{split}.bin.tmp")
        part.tofile(tmp)
        os.replace(tmp, os.path.join(out_dir, f"{split}.bin"))
    meta = {"vocab_size": tokenizer.vocab_size, "tokenizer": tokenizer.to_dict(),
            "n_tokens": {"train": int(cut), "val": int(len(ids) - cut)}}
    with open(os.path.join(out_dir, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False)
    return meta


class TokenDataset:
    """Random blocks from `{data_dir}/{split}.bin` (uint16, memory-mapped)."""

    def __init__(self, data_dir: str, block_size: int, batch_size: int, seed: int = 0, device: str = "cpu"):
        self.data_dir, self.block_size, self.batch_size, self.seed, self.device = \
            data_dir, block_size, batch_size, int(seed), device
        self.position = {s: 0 for s in SPLITS}
        self._data = {}
        for s in SPLITS:
            path = os.path.join(data_dir, f"{s}.bin")
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path} is missing; write it with prepare_token_files(text, tokenizer, "
                                        f"{data_dir!r})")
            data = np.memmap(path, dtype=np.uint16, mode="r")
            if len(data) <= block_size:
                raise ValueError(f"{path} has {len(data)} tokens, fewer than block_size + 1 = {block_size + 1}")
            self._data[s] = data
        meta = os.path.join(data_dir, "meta.json")
        self.meta = json.load(open(meta, encoding="utf-8")) if os.path.exists(meta) else {}

    @property
    def vocab_size(self) -> int | None:
        return self.meta.get("vocab_size")

    def tokenizer(self):
        return tokenizer_from_dict(self.meta["tokenizer"])

    def __len__(self) -> int:
        return len(self._data["train"])

    def batch_indices(self, split: str, k: int) -> np.ndarray:
        """Start offsets of batch k of `split` (a pure function of seed, split and k)."""
        data = self._data[split]
        rng = np.random.default_rng([self.seed, SPLITS.index(split), k])
        return rng.integers(0, len(data) - self.block_size, size=self.batch_size)

    def get_batch_numpy(self, split: str, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) as int64 arrays; with k=None, the next batch of `split` (advances the position)."""
        if split not in self._data:
            raise KeyError(f"unknown split {split!r}; have {list(self._data)}")
        if k is None:
            k = self.position[split]
            self.position[split] += 1
        data, t = self._data[split], self.block_size
        ix = self.batch_indices(split, k)
        rows = np.lib.stride_tricks.sliding_window_view(data, t + 1)[ix].astype(np.int64)
        return rows[:, :-1], rows[:, 1:]

    def get_batch(self, split: str, k: int | None = None):
        """(x, y) as tracegrad i64 tensors of shape [batch_size, block_size]."""
        x, y = self.get_batch_numpy(split, k)
        return tensor(x, device=self.device), tensor(y, device=self.device)

    def unigram_loss(self, split: str = "val", ref: str = "train") -> float:
        """Cross-entropy (nats/token) of `split` under `ref`'s token frequencies: the loss of a
        model that ignores context. A trained model should be well below it."""
        v = max(int(self._data[ref].max()), int(self._data[split].max())) + 1
        counts = np.bincount(self._data[ref], minlength=v).astype(np.float64) + 1.0   # add-one smoothing
        logp = np.log(counts / counts.sum())
        return float(-logp[self._data[split]].mean())

    def state_dict(self) -> dict:
        return {"seed": self.seed, "position": dict(self.position)}

    def load_state_dict(self, state: dict) -> None:
        self.seed = int(state["seed"])
        self.position = {s: int(state["position"].get(s, 0)) for s in SPLITS}
