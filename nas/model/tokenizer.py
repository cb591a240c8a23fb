"""Tokenizers for supernet training: train a byte-level BPE, save and load it with a supernet.

From-scratch runs train a GPT-2-style byte-level BPE with the ``tokenizers`` library
(every byte is in the base alphabet, so no text is ever out of vocabulary) and wrap it
as a :class:`transformers.PreTrainedTokenizerFast`, which is what the rest of the
product (``LoadedSupernet.load_tokenizer``, the evaluators) expects to find in a
supernet's ``tokenizer/`` directory. Runs that start from an imported model keep that
model's tokenizer unchanged.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from nas.errors import NasError

log = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
_MIN_VOCAB = 256 + 2  # the byte alphabet plus the two special tokens


def train_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int,
    min_frequency: int = 2,
) -> Any:
    """Train a byte-level BPE of ``vocab_size`` tokens on ``texts``.

    Returns a ``PreTrainedTokenizerFast`` whose ``eos_token``/``bos_token`` is
    ``<|endoftext|>`` (id 0) and ``pad_token`` is ``<|pad|>`` (id 1). Training is
    deterministic for the same texts in the same order.
    """
    if vocab_size < _MIN_VOCAB:
        raise NasError(f"tokenizer vocab_size={vocab_size} is too small; a byte-level BPE needs at least {_MIN_VOCAB}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    seen = _Counting(texts)
    tok.train_from_iterator(seen, trainer=trainer)
    if seen.chars == 0:
        raise NasError("cannot train a tokenizer on an empty corpus; check the corpus paths in the config")
    log.info("trained a byte-level BPE of %d tokens on %d characters", tok.get_vocab_size(), seen.chars)
    return wrap_tokenizer(tok)


class _Counting:
    """Iterate texts while counting their characters (to detect an empty corpus)."""
    def __init__(self, texts: Iterable[str]) -> None:
        self.texts = texts
        self.chars = 0

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            self.chars += len(text)
            yield text


def wrap_tokenizer(tok: Any) -> Any:
    """Wrap a ``tokenizers.Tokenizer`` as a ``PreTrainedTokenizerFast`` with our special tokens."""
    # deferred: transformers takes seconds to import; only this path needs it
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=None,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(tokenizer: Any, directory: str | Path) -> Path:
    """Write ``tokenizer`` in Hugging Face format (the supernet's ``tokenizer/`` layout)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    return out


def load_tokenizer(directory: str | Path) -> Any:
    """Load a Hugging Face tokenizer directory (ours or an imported model's)."""
    # deferred: transformers takes seconds to import; only this path needs it
    from transformers import AutoTokenizer

    path = Path(directory)
    if not path.is_dir() or not any(path.glob("tokenizer*.json")):
        raise NasError(
            f"tokenizer directory {path} does not exist or holds no tokenizer files; "
            "point tokenizer.path at a directory written by save_pretrained (e.g. SUPERNET/tokenizer)"
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise NasError(f"cannot load the tokenizer in {path}: {exc}") from None
    if not getattr(tok, "is_fast", False):
        raise NasError(f"tokenizer in {path} is not a fast (Rust) tokenizer; save it with tokenizer.json")
    return tok


def fingerprint(tokenizer: Any) -> str:
    """sha256 (16 hex digits) of the tokenizer's full JSON: the tokenised-corpus cache key."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    return hashlib.sha256(backend.to_str().encode()).hexdigest()[:16]


def eos_id(tokenizer: Any) -> int:
    """The id that separates documents in the training stream (EOS, else BOS, else 0)."""
    for attr in ("eos_token_id", "bos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


__all__ = ["EOS_TOKEN", "PAD_TOKEN", "eos_id", "fingerprint", "load_tokenizer", "save_tokenizer", "train_tokenizer", "wrap_tokenizer"]
