"""nas.model.tokenizer: train a byte-level BPE, save it, load it back unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas.errors import NasError
from nas.model.tokenizer import EOS_TOKEN, eos_id, fingerprint, load_tokenizer, save_tokenizer, train_tokenizer

TEXT = ["It was the best of times, it was the worst of times. " * 40, "Call me Ishmael. Some years ago. " * 40]


def test_train_save_load_round_trip(tmp_path: Path) -> None:
    tok = train_tokenizer(TEXT, vocab_size=300)
    assert len(tok) == 300
    assert tok.eos_token == EOS_TOKEN and eos_id(tok) == 0 and tok.pad_token_id == 1
    sample = "It was the worst of times, said Ishmael — naïve café ☃\n\ttabs"
    ids = tok(sample, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == sample  # byte-level: any text round-trips, no unknown tokens
    assert len(ids) < len(sample.encode())  # merges were learned
    save_tokenizer(tok, tmp_path / "tokenizer")
    again = load_tokenizer(tmp_path / "tokenizer")
    assert again(sample, add_special_tokens=False)["input_ids"] == ids
    assert fingerprint(again) == fingerprint(tok)
    assert again.eos_token_id == 0 and len(again) == 300
    assert train_tokenizer(TEXT, vocab_size=300).get_vocab() == tok.get_vocab()  # deterministic


def test_tokenizer_errors(tmp_path: Path) -> None:
    with pytest.raises(NasError, match="too small"):
        train_tokenizer(TEXT, vocab_size=100)
    with pytest.raises(NasError, match="empty corpus"):
        train_tokenizer([], vocab_size=300)
    with pytest.raises(NasError, match="does not exist"):
        load_tokenizer(tmp_path / "nothing")
