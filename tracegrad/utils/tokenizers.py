"""Tokenizers that need no downloads: characters, and byte-level BPE trained on your own text.

    tok = CharTokenizer.train(text)              # vocabulary: the sorted set of characters
    tok = BPETokenizer.train(text, vocab_size=512)
    ids = tok.encode("hello"); tok.decode(ids) == "hello"
    tok.save("tok.json"); tok = load_tokenizer("tok.json")

Byte-level BPE is GPT-2's scheme (Sennrich et al. 2016; Radford et al. 2019): text is split into
pre-tokens by a regex, each pre-token is a byte string, and training merges the most frequent
adjacent pair of symbols again and again. Ids 0..255 are the bytes; id 256 + r is merge r.
Saved files are JSON, never pickles.
"""
from __future__ import annotations

import heapq
import json
import re
from collections import Counter, defaultdict

# GPT-2's split for Python's `re`: [^\W\d_] is a letter in any script, and `_` joins the punctuation
GPT2_SPLIT = r"""'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""


class Tokenizer:
    kind = ""

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False)

    def __len__(self) -> int:
        return self.vocab_size


class CharTokenizer(Tokenizer):
    """One id per character of a fixed alphabet (nanoGPT's shakespeare_char scheme)."""
    kind = "char"

    def __init__(self, chars):
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in this tokenizer's alphabet of "
                             f"{self.vocab_size} characters") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_dict(self) -> dict:
        return {"type": self.kind, "chars": "".join(self.chars)}


class BPETokenizer(Tokenizer):
    """Byte-level BPE: any text encodes (no unknown tokens); merges are learned by `train`."""
    kind = "byte_bpe"

    def __init__(self, merges: list[tuple[int, int]], pattern: str = GPT2_SPLIT, special: dict | None = None):
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: r for r, m in enumerate(self.merges)}
        self.pattern = pattern
        self._split = re.compile(pattern)
        self.vocab = [bytes([i]) for i in range(256)]
        for a, b in self.merges:
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self.special = dict(special or {})            # "<|endoftext|>" -> id, after the merges
        self._special_re = re.compile("(" + "|".join(map(re.escape, self.special)) + ")") if self.special else None
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges) + len(self.special)

    # -- training ---------------------------------------------------------------------------
    @classmethod
    def train(cls, text: str, vocab_size: int, pattern: str = GPT2_SPLIT, special_tokens=(),
              verbose: bool = False) -> "BPETokenizer":
        """Learn `vocab_size - 256 - len(special_tokens)` merges from `text`.

        Pair counts are kept up to date incrementally (only words holding the merged pair are
        touched) and the best pair comes from a lazy max-heap; ties go to the smaller pair ids,
        so training is deterministic.
        """
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise ValueError(f"vocab_size must be at least {256 + len(special_tokens)}")
        counts = Counter(re.findall(pattern, text))
        words = [list(w.encode("utf-8")) for w in counts]
        freq = list(counts.values())
        pairs: Counter = Counter()
        where: dict[tuple, set] = defaultdict(set)
        for i, w in enumerate(words):
            for p in zip(w, w[1:]):
                pairs[p] += freq[i]
                where[p].add(i)
        heap = [(-c, p) for p, c in pairs.items()]
        heapq.heapify(heap)
        merges: list[tuple[int, int]] = []
        while len(merges) < n_merges and heap:
            c, p = heapq.heappop(heap)
            if -c != pairs.get(p, 0) or c == 0:
                continue                       # stale heap entry
            new = 256 + len(merges)
            merges.append(p)
            changed: set = set()
            for i in where.pop(p, ()):
                w, f = words[i], freq[i]
                for q in zip(w, w[1:]):        # take the word's old pairs out
                    pairs[q] -= f
                    changed.add(q)
                words[i] = w = _merge(w, p, new)
                for q in zip(w, w[1:]):
                    pairs[q] += f
                    where[q].add(i)
                    changed.add(q)
            pairs.pop(p, None)
            for q in changed:
                if pairs.get(q, 0) > 0:
                    heapq.heappush(heap, (-pairs[q], q))
            if verbose and len(merges) % 100 == 0:
                print(f"bpe: {len(merges)}/{n_merges} merges")
        special = {s: 256 + len(merges) + k for k, s in enumerate(special_tokens)}
        return cls(merges, pattern, special)

    @classmethod
    def train_from_file(cls, path: str, vocab_size: int, **kw) -> "BPETokenizer":
        with open(path, encoding="utf-8") as f:
            return cls.train(f.read(), vocab_size, **kw)

    # -- using ------------------------------------------------------------------------------
    def _encode_word(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is not None:
            return ids
        ids = list(word.encode("utf-8"))
        while len(ids) > 1:
            best = min(zip(ids, ids[1:]), key=lambda q: self.ranks.get(q, 1 << 62))
            r = self.ranks.get(best)
            if r is None:
                break
            ids = _merge(ids, best, 256 + r)
        if len(self._cache) < 100_000:
            self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        parts = self._special_re.split(text) if self._special_re else [text]
        for part in parts:
            if part in self.special:
                out.append(self.special[part])
                continue
            for word in self._split.findall(part):
                out.extend(self._encode_word(word))
        return out

    def decode(self, ids) -> str:
        inv = {v: k.encode("utf-8") for k, v in self.special.items()}
        return b"".join(inv[i] if i in inv else self.vocab[i] for i in map(int, ids)).decode("utf-8", "replace")

    def to_dict(self) -> dict:
        return {"type": self.kind, "pattern": self.pattern, "merges": [list(m) for m in self.merges],
                "special": self.special}


def _merge(ids: list[int], pair: tuple[int, int], new: int) -> list[int]:
    out, i, n = [], 0, len(ids)
    while i < n:
        if i < n - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def tokenizer_from_dict(d: dict) -> Tokenizer:
    kind = d.get("type")
    if kind == CharTokenizer.kind:
        return CharTokenizer(d["chars"])
    if kind == BPETokenizer.kind:
        return BPETokenizer([tuple(m) for m in d["merges"]], d.get("pattern", GPT2_SPLIT), d.get("special"))
    raise ValueError(f"unknown tokenizer type {kind!r} (known: 'char', 'byte_bpe')")


def load_tokenizer(path: str) -> Tokenizer:
    with open(path, encoding="utf-8") as f:
        return tokenizer_from_dict(json.load(f))
