"""nas.training.data: cleaning, sources, token cache, split and deterministic batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.errors import NasError
from nas.model.tokenizer import train_tokenizer
from nas.training.data import (
    CorpusSpec,
    TokenBatches,
    clean_text,
    corpus_fingerprint,
    eval_windows,
    iter_documents,
    load_tokens,
    split_tokens,
)

PG_SAMPLE = (
    "\ufeffThe Project Gutenberg EBook of Persuasion, by Jane Austen\r\n\r\n"
    "This eBook is for the use of anyone anywhere at no cost\r\n"
    "*** START OF THIS PROJECT GUTENBERG EBOOK PERSUASION ***\r\n\r\n\r\n\r\n"
    "Chapter 1\r\n\r\nSir Walter Elliot, of Kellynch Hall,\r\nwas a man.\r\n\r\n\r\n\r\n\r\n"
    "Finis\r\n\r\nEnd of the Project Gutenberg EBook of Persuasion, by Jane Austen\r\n\r\n"
    "*** END OF THIS PROJECT GUTENBERG EBOOK PERSUASION ***\r\n"
    "Updated editions will replace the previous one.\r\n"
)


def test_clean_text_strips_gutenberg_header_footer_crlf_and_bom() -> None:
    text = clean_text(PG_SAMPLE)
    assert text == "Chapter 1\n\nSir Walter Elliot, of Kellynch Hall,\nwas a man.\n\nFinis"
    assert "\r" not in text and "\ufeff" not in text
    for leaked in ("Project Gutenberg", "START OF", "END OF", "Updated editions", "anyone anywhere"):
        assert leaked not in text


def test_clean_text_variants() -> None:
    # marker without spaces (newer PG files), lone CR line ends, no markers at all
    assert clean_text("head\n***START OF THE PROJECT GUTENBERG EBOOK X***\nbody\r\rmore\n***END OF THE PROJECT X***\nfoot") == "body\n\nmore"
    assert clean_text("\ufeffplain text\r\nline two") == "plain text\nline two"


def test_sources_jsonl_dirs_and_errors(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("first doc")
    (tmp_path / "d" / "notes.csv").write_text("ignored,csv")
    rows = [{"text": "jsonl one", "id": 1}, {"text": "jsonl two"}]
    (tmp_path / "d" / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    docs = list(iter_documents(CorpusSpec(sources=(str(tmp_path / "d"),))))
    assert docs == ["first doc", "jsonl one", "jsonl two"]
    assert list(iter_documents(CorpusSpec(sources=(str(tmp_path / "d"),), max_chars=12))) == ["first doc", "jso"]

    with pytest.raises(NasError, match="does not exist"):
        list(iter_documents(CorpusSpec(sources=(str(tmp_path / "missing"),))))
    (tmp_path / "empty").mkdir()
    with pytest.raises(NasError, match="holds no"):
        list(iter_documents(CorpusSpec(sources=(str(tmp_path / "empty"),))))
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(NasError, match="text_field"):
        list(iter_documents(CorpusSpec(sources=(str(tmp_path / "bad.jsonl"),))))
    assert list(iter_documents(CorpusSpec(sources=(str(tmp_path / "bad.jsonl"),), text_field="body"))) == ["x"]


def _tokenizer():
    return train_tokenizer(["the cat sat on the mat. " * 50, "a dog ran far away. " * 50], vocab_size=280)


def test_token_cache_is_keyed_by_content(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat. " * 200)
    spec = CorpusSpec(sources=(str(corpus),))
    tok = _tokenizer()
    first, key = load_tokens(spec, tok, cache_dir=tmp_path / "cache", eos=0)
    assert first.dtype == np.uint16 and first[-1] == 0  # documents end with EOS
    assert list(first[:-1]) == tok(clean_text(corpus.read_text()), add_special_tokens=False)["input_ids"]
    again, key2 = load_tokens(spec, tok, cache_dir=tmp_path / "cache", eos=0)
    assert key2 == key and isinstance(again, np.memmap)  # read back from the cache
    fp = corpus_fingerprint(spec)
    corpus.write_text("a dog ran far away. " * 200)
    assert corpus_fingerprint(spec) != fp
    changed, key3 = load_tokens(spec, tok, cache_dir=tmp_path / "cache", eos=0)
    assert key3 != key and not np.array_equal(np.asarray(changed), np.asarray(first))


def test_empty_corpus_after_cleaning_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pg.txt").write_text("header\n*** START OF THE BOOK ***\n\n\n*** END OF THE BOOK ***\nfooter")
    with pytest.raises(NasError, match="empty after cleaning"):
        load_tokens(CorpusSpec(sources=(str(tmp_path / "pg.txt"),)), _tokenizer(), cache_dir=tmp_path, eos=0)


def test_split_is_deterministic_disjoint_and_complete() -> None:
    tokens = np.arange(10_000, dtype=np.uint16)
    train, val = split_tokens(tokens, val_fraction=0.1, seq_len=16)
    train2, val2 = split_tokens(tokens, val_fraction=0.1, seq_len=16)
    assert np.array_equal(train, train2) and np.array_equal(val, val2)
    assert train.size + val.size == tokens.size
    assert not set(train.tolist()) & set(val.tolist())
    assert 0.05 < val.size / tokens.size < 0.15
    # validation pieces come from all over the stream, not from one end
    assert val.min() < 2_000 and val.max() > 8_000
    with pytest.raises(NasError, match="at least"):
        split_tokens(np.arange(20, dtype=np.uint16), val_fraction=0.1, seq_len=16)


def test_batches_are_deterministic_and_resumable() -> None:
    tokens = np.arange(1_001, dtype=np.int64)
    batches = TokenBatches(tokens, seq_len=10, seed=3)
    assert batches.n_windows == 100
    whole = batches.get(0, 250)  # crosses two epoch boundaries
    assert whole.shape == (250, 11)
    assert torch.equal(TokenBatches(tokens, 10, 3).get(97, 7), whole[97:104])  # resume at any sample
    first_epoch = sorted(int(r[0]) // 10 for r in whole[:100])
    assert first_epoch == list(range(100))  # one epoch visits every window once
    assert not torch.equal(whole[:100], whole[100:200])  # epochs are reshuffled
    assert not torch.equal(TokenBatches(tokens, 10, 4).get(0, 20), whole[:20])  # seed matters
    windows = eval_windows(tokens, 10, 50)
    assert windows.shape == (5, 11) and int(windows[0, 0]) == 0 and int(windows[-1, 0]) == 990
