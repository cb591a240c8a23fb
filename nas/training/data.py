"""Training text: load, clean, tokenise once (cached), split, and batch deterministically.

Sources (a :class:`CorpusSpec`):

- local text files or directories of them (``*.txt``, ``*.md``, ``*.text``; sorted,
  recursive), e.g. the Gutenberg novels in ``NAS_DATA_DIR/corpus/gutenberg``;
- JSON-lines files (``*.jsonl``) with one document per line in a text field;
- ``hf:NAME`` — a Hugging Face dataset (needs the network, or a local datasets cache).

Every document is cleaned (:func:`clean_text`: UTF-8 BOM removed, CRLF and lone CR
turned into LF, the Project Gutenberg header and footer cut off outside the
``*** START OF`` / ``*** END OF`` lines), tokenised, and the documents are joined
into one stream with the EOS id between them. The stream is cached under the work
dir as ``cache/tokens/<key>.npy``, keyed by a hash of the corpus files' contents,
the cleaning version and the tokenizer, so a second run (or a second process)
reads it back in milliseconds.

The train/validation split is deterministic and interleaved (:func:`split_tokens`):
the stream is cut into equal pieces and every ``round(1/val_fraction)``-th piece is
held out, so the validation text comes from all over the corpus, not from one book.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nas.errors import NasError
from nas.model.tokenizer import fingerprint
from nas.paths import data_dir

log = logging.getLogger(__name__)

CLEAN_VERSION = 1  # bump when clean_text changes: it invalidates the token caches
TEXT_SUFFIXES = (".txt", ".md", ".text")
JSONL_SUFFIXES = (".jsonl",)

_PG_START = re.compile(r"^[ \t]*\*{3}[ \t]*START OF\b.*$", re.MULTILINE | re.IGNORECASE)
_PG_END = re.compile(r"^[ \t]*\*{3}[ \t]*END OF\b.*$", re.MULTILINE | re.IGNORECASE)
_PG_TAIL = re.compile(r"^[ \t]*End of (?:the |this )?Project Gutenberg\b.*$", re.MULTILINE | re.IGNORECASE)
_BLANK_RUNS = re.compile(r"\n{3,}")


# ------------------------------------------------------------------ cleaning
def strip_gutenberg(text: str) -> str:
    """The text between a Project Gutenberg ``*** START OF ...`` line and its
    ``*** END OF ...`` line (either may be missing; text without them is unchanged)."""
    start = _PG_START.search(text)
    if start is not None:
        text = text[start.end():]
    end = _PG_END.search(text)
    if end is not None:
        text = text[: end.start()]
        tail = None
        for tail in _PG_TAIL.finditer(text, max(0, len(text) - 4000)):
            pass
        if tail is not None:  # the "End of the Project Gutenberg EBook of ..." line above the marker
            text = text[: tail.start()]
    return text


def clean_text(text: str) -> str:
    """Normalise one document: drop a leading BOM, CRLF/CR -> LF, strip the Gutenberg
    header and footer, collapse runs of blank lines to one, and trim surrounding space."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return _BLANK_RUNS.sub("\n\n", strip_gutenberg(text)).strip()


# ------------------------------------------------------------------ sources
@dataclass(frozen=True)
class CorpusSpec:
    """Where the training text comes from.

    ``sources`` are paths (files or directories) or ``hf:NAME`` dataset names;
    ``max_chars`` caps the cleaned text read (documents in order, the last one cut),
    for quick runs.
    """
    sources: tuple[str, ...]
    text_field: str = "text"
    hf_config: str | None = None
    hf_split: str = "train"
    max_chars: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(str(s) for s in self.sources))
        if not self.sources:
            raise NasError("corpus: no sources given; name text files, directories, .jsonl files or hf:DATASET")
        if self.max_chars is not None and self.max_chars < 1:
            raise NasError(f"corpus: max_chars must be positive, got {self.max_chars}")


def resolve_path(source: str) -> Path:
    """A corpus path as given, else relative to the data dir (``NAS_DATA_DIR``)."""
    path = Path(source).expanduser()
    if path.exists() or path.is_absolute():
        return path
    root = data_dir()
    if root is not None and (root / path).exists():
        return root / path
    return path


def corpus_files(spec: CorpusSpec) -> list[Path]:
    """The local files a spec names, in a stable order (errors for missing/empty inputs)."""
    files: list[Path] = []
    for source in spec.sources:
        if source.startswith("hf:"):
            continue
        path = resolve_path(source)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES + JSONL_SUFFIXES
            )
            if not found:
                raise NasError(
                    f"corpus directory {path} holds no {'/'.join(TEXT_SUFFIXES + JSONL_SUFFIXES)} files; "
                    "point data.corpus at a folder of text files"
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            hint = f" (also looked in NAS_DATA_DIR={data_dir()})" if data_dir() else ""
            raise NasError(f"corpus path {source} does not exist{hint}; fix data.corpus in the config")
    return files


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise NasError(f"cannot read corpus file {path}: {exc}") from None


def _jsonl_documents(path: Path, field: str) -> Iterator[str]:
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise NasError(f"{path}:{number} is not valid JSON ({exc.msg}); fix or remove the line") from None
            if not isinstance(row, dict) or field not in row:
                raise NasError(
                    f"{path}:{number} has no '{field}' field; name the field holding the text "
                    "(data.text_field in a train config, --text-field for nas heal, --heal-text-field for nas export)"
                )
            if not isinstance(row[field], str):
                raise NasError(f"{path}:{number} field '{field}' is not a string")
            yield row[field]


def _hf_documents(name: str, spec: CorpusSpec) -> Iterator[str]:
    try:
        # deferred: the datasets package is optional (hf: corpora only)
        import datasets

        ds = datasets.load_dataset(name, spec.hf_config, split=spec.hf_split)
    except Exception as exc:  # network, unknown dataset, missing config: one clear message
        raise NasError(
            f"cannot load Hugging Face dataset {name!r} (config {spec.hf_config}, split {spec.hf_split}): "
            f"{type(exc).__name__}: {exc}. Offline? Use local text or .jsonl files instead"
        ) from None
    if spec.text_field not in ds.column_names:
        raise NasError(f"dataset {name!r} has no column {spec.text_field!r} (columns: {ds.column_names}); set data.text_field")
    for row in ds:
        yield row[spec.text_field]


def iter_documents(spec: CorpusSpec) -> Iterator[str]:
    """Cleaned, non-empty documents of the corpus, in a stable order."""
    budget = spec.max_chars
    files = corpus_files(spec)
    by_source: list[Iterator[str]] = []
    for f in files:
        if f.suffix.lower() in JSONL_SUFFIXES:
            by_source.append(_jsonl_documents(f, spec.text_field))
        else:
            by_source.append(iter([_read_text(f)]))
    for source in spec.sources:
        if source.startswith("hf:"):
            by_source.append(_hf_documents(source[3:], spec))
    for docs in by_source:
        for raw in docs:
            text = clean_text(raw)
            if not text:
                continue
            if budget is not None:
                if budget <= 0:
                    return
                text = text[:budget]
                budget -= len(text)
            yield text


def corpus_fingerprint(spec: CorpusSpec) -> str:
    """sha256 (16 hex) over every corpus file's name and bytes, the cleaning version
    and the spec's options: changes whenever the training text could change."""
    h = hashlib.sha256()
    h.update(json.dumps({"clean": CLEAN_VERSION, "field": spec.text_field, "max_chars": spec.max_chars}).encode())
    for f in corpus_files(spec):
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    for source in spec.sources:
        if source.startswith("hf:"):
            h.update(f"{source}|{spec.hf_config}|{spec.hf_split}".encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- tokenising
def _encode_batches(tokenizer: Any, docs: Sequence[str]) -> list[list[int]]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return [e.ids for e in encode(list(docs), add_special_tokens=False)]
    return [tokenizer(d, add_special_tokens=False)["input_ids"] for d in docs]


def tokenize_documents(docs: Iterator[str], tokenizer: Any, eos: int) -> np.ndarray:
    """One token stream: every document followed by ``eos``."""
    vocab = len(tokenizer)
    dtype = np.uint16 if vocab <= np.iinfo(np.uint16).max + 1 else np.uint32
    parts: list[np.ndarray] = []
    batch: list[str] = []
    batch_chars = 0

    def flush() -> None:
        nonlocal batch_chars
        for ids in _encode_batches(tokenizer, batch):
            parts.append(np.asarray(ids + [eos], dtype=dtype))
        batch.clear()
        batch_chars = 0

    for doc in docs:
        batch.append(doc)
        batch_chars += len(doc)
        if batch_chars >= 8_000_000 or len(batch) >= 1024:
            flush()
    if batch:
        flush()
    if not parts:
        return np.zeros(0, dtype=dtype)
    return np.concatenate(parts)


def load_tokens(spec: CorpusSpec, tokenizer: Any, *, cache_dir: str | Path, eos: int) -> tuple[np.ndarray, str]:
    """The corpus as one token stream (memory-mapped from the cache when present) and its cache key."""
    key = hashlib.sha256(f"{corpus_fingerprint(spec)}|{fingerprint(tokenizer)}|eos={eos}".encode()).hexdigest()[:20]
    cache = Path(cache_dir) / "tokens"
    path = cache / f"{key}.npy"
    if path.is_file():
        log.info("token cache hit: %s", path)
        return np.load(path, mmap_mode="r"), key
    tokens = tokenize_documents(iter_documents(spec), tokenizer, eos)
    if tokens.size == 0:
        raise NasError(
            f"corpus {list(spec.sources)} is empty after cleaning (no text between the Gutenberg markers?); "
            "give files that contain text"
        )
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f"{key}.{os.getpid()}.tmp.npy"
    np.save(tmp, tokens)
    tmp.replace(path)
    (cache / f"{key}.json").write_text(
        json.dumps({"sources": list(spec.sources), "tokens": int(tokens.size), "dtype": str(tokens.dtype)}) + "\n"
    )
    log.info("tokenised %d tokens into %s", tokens.size, path)
    return np.load(path, mmap_mode="r"), key


# ------------------------------------------------------------------ split
def split_tokens(tokens: np.ndarray, *, val_fraction: float, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic interleaved split: cut the stream into equal pieces (at least 8
    validation pieces when the corpus allows it) and hold out every ``round(1/val_fraction)``-th."""
    if not 0 < val_fraction < 0.5:
        raise NasError(f"data.val_fraction must be in (0, 0.5), got {val_fraction}")
    n = int(tokens.size)
    every = max(2, round(1 / val_fraction))
    piece = max(seq_len + 1, n // (every * 8))
    n_pieces = math.ceil(n / piece)
    val_ids = [i for i in range(n_pieces) if i % every == every - 1] or ([n_pieces - 1] if n_pieces > 1 else [])
    need = 2 * (seq_len + 1)
    if n_pieces < 2 or n < need:
        raise NasError(
            f"corpus has only {n} tokens; a sequence length of {seq_len} needs at least {need} "
            "(one training and one validation sequence); add text or lower seq_len"
        )
    val_set = set(val_ids)
    train = np.concatenate([tokens[i * piece:(i + 1) * piece] for i in range(n_pieces) if i not in val_set])
    val = np.concatenate([tokens[i * piece:(i + 1) * piece] for i in sorted(val_set)])
    if train.size < seq_len + 1 or val.size < seq_len + 1:
        raise NasError(f"corpus of {n} tokens is too small to split at seq_len {seq_len}; add text or lower seq_len")
    return train, val


# ------------------------------------------------------------------ batches
class TokenBatches:
    """Deterministic, resumable training batches of ``seq_len + 1``-token windows.

    Window ``w`` is ``tokens[w*seq_len : w*seq_len + seq_len + 1]``. Sample ``i`` of the
    (endless) training order is window ``perm_e[i mod n]`` of epoch ``e = i // n``, with
    ``perm_e`` drawn from a ``torch.Generator`` seeded by ``(seed, e)``: the data
    position is one integer (samples consumed), which makes exact resume and data
    parallelism (rank ``r`` takes its slice of a global batch) trivial.
    """
    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int) -> None:
        self.tokens = tokens
        self.seq_len = seq_len
        self.seed = seed
        self.n_windows = (int(tokens.size) - 1) // seq_len
        if self.n_windows < 1:
            raise NasError(f"training split has {tokens.size} tokens, fewer than one sequence of {seq_len + 1}")
        self._epoch = -1
        self._perm: Tensor | None = None

    def _permutation(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n_windows, generator=g)
            self._epoch = epoch
        assert self._perm is not None
        return self._perm

    def window(self, sample: int) -> int:
        epoch, j = divmod(sample, self.n_windows)
        return int(self._permutation(epoch)[j])

    def get(self, start: int, count: int) -> Tensor:
        """Samples ``start .. start+count-1`` as an int64 tensor (count, seq_len + 1)."""
        rows = []
        for i in range(start, start + count):
            w = self.window(i) * self.seq_len
            rows.append(np.asarray(self.tokens[w:w + self.seq_len + 1], dtype=np.int64))
        return torch.from_numpy(np.stack(rows))


def eval_windows(tokens: np.ndarray, seq_len: int, max_tokens: int) -> Tensor:
    """Up to ``max_tokens // seq_len`` non-overlapping windows spread evenly over ``tokens``
    (int64, (N, seq_len + 1)): a fixed validation set."""
    total = (int(tokens.size) - 1) // seq_len
    n = max(1, min(total, max_tokens // seq_len))
    picks = sorted({round(k * (total - 1) / max(1, n - 1)) for k in range(n)}) if n > 1 else [0]
    rows = [np.asarray(tokens[w * seq_len:w * seq_len + seq_len + 1], dtype=np.int64) for w in picks]
    return torch.from_numpy(np.stack(rows))


__all__ = [
    "CLEAN_VERSION",
    "CorpusSpec",
    "TokenBatches",
    "clean_text",
    "corpus_files",
    "corpus_fingerprint",
    "eval_windows",
    "iter_documents",
    "load_tokens",
    "resolve_path",
    "split_tokens",
    "strip_gutenberg",
    "tokenize_documents",
]
