"""Tiny corpora and training configs for the training tests (seconds, no shared data needed)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from nas.training import TrainConfig, parse_train_config

_SUBJECTS = ["the cat", "a dog", "the old man", "my sister", "the captain", "a small bird", "the miller"]
_VERBS = ["saw", "loved", "followed", "feared", "painted", "called", "found"]
_OBJECTS = ["the river", "a red house", "the green hills", "her brother", "the ship", "a letter", "the moon"]


def write_corpus(folder: Path, *, n_files: int = 2, sentences: int = 700, seed: int = 0) -> Path:
    """A folder of Gutenberg-style text files (BOM, CRLF, header/footer) of simple sentences."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for f in range(n_files):
        lines = []
        for _ in range(sentences):
            lines.append(f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}.")
        body = "\r\n".join(" ".join(lines[i:i + 4]) for i in range(0, len(lines), 4))
        text = (
            "\ufeffThe Project Gutenberg EBook of Nothing\r\n\r\nLICENSE HEADER TEXT\r\n"
            f"*** START OF THIS PROJECT GUTENBERG EBOOK BOOK {f} ***\r\n{body}\r\n"
            f"*** END OF THIS PROJECT GUTENBERG EBOOK BOOK {f} ***\r\nLICENSE FOOTER TEXT\r\n"
        )
        (folder / f"book{f}.txt").write_bytes(text.encode("utf-8"))
    return folder


def tiny_config(tmp_path: Path, corpus: Path, **changes: Any) -> TrainConfig:
    """A 3-layer, d_model-32 supernet on ``corpus``; ``changes`` update the top-level dict
    (nested sections are replaced whole)."""
    data: dict[str, Any] = {
        "out": str(tmp_path / "out"),
        "seed": 0,
        "data": {"corpus": [str(corpus)], "val_fraction": 0.05},
        "tokenizer": {"vocab_size": 300, "min_frequency": 1},
        "model": {"d_model": 32, "n_layer": 3, "n_head": 4, "n_kv_head": 2, "d_ff": 64},
        "space": {"n_layer_choices": [2, 3], "n_head_choices": [2, 4], "d_ff_choices": [32, 64]},
        "sandwich": {"n_random": 1},
        "optim": {"lr": 3e-3, "warmup_fraction": 0.0},
        "steps": 4,
        "batch_size": 4,
        "seq_len": 32,
        "dtype": "fp32",
        "eval_tokens": 256,
        "log_every": 1,
    }
    data.update(changes)
    return parse_train_config(data, source="test")
