"""Incremental detokenization (tracegrad/serve/detokenize.py): after every token the text equals the
whole decode, for byte-level BPE (characters split across tokens) and SentencePiece-style
tokenizers (a first token's leading space dropped), while each step decodes a few tokens only."""
from __future__ import annotations

import pytest

from tracegrad.serve.detokenize import Detokenizer

tokenizers = pytest.importorskip("tokenizers")

TEXT = ["Hello wörld, naïve café — 東京 🙂 ok.", "  two  spaces\nand a new line ünïcödé 🙂🙂"]


class Counting:
    """A tokenizer that counts the tokens it decodes."""

    def __init__(self, tok):
        self.tok, self.decoded = tok, 0

    def decode(self, ids):
        self.decoded += len(ids)
        return self.tok.decode(ids)


def _byte_level():
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT, trainer)
    return tok


def _metaspace():
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
    tok.decoder = tokenizers.decoders.Sequence([tokenizers.decoders.ByteFallback(), tokenizers.decoders.Metaspace()])
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>"] + [f"<0x{b:02X}>" for b in range(256)])
    tok.train_from_iterator(TEXT, trainer)
    return tok


@pytest.mark.parametrize("make", [_byte_level, _metaspace], ids=["byte-level", "metaspace"])
def test_the_text_after_every_token_is_the_whole_decode(make):
    tok = make()
    for text in (" ".join(TEXT) * 3, TEXT[1] * 4):
        ids = tok.encode(text).ids
        assert len(ids) > 10
        counting, d = Counting(tok), Detokenizer()
        for n in range(1, len(ids) + 1):
            assert d.text(counting, ids[:n]) == tok.decode(ids[:n]), n
        assert counting.decoded < 8 * len(ids) < len(ids) * (len(ids) + 1) // 4   # windows, not n^2 / 2
